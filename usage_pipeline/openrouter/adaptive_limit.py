"""How many record fetches may be in flight, and when the next may start: one controller for all of them.

OpenRouter publishes no rate limit for `GET /generation`; it answers 429 when a limit is hit. So the
limit is discovered the way TCP discovers a path's capacity, with one rule above all: **a fault costs
throughput in proportion to its share.** A lone refusal or failure is that request's trouble, retried on
its own; only signals about the whole account or server act on every request.

- Growth: while answers come back clean, by one per answer until the first congestion (doubling per round
  trip), then by one per round trip near the limit where it last had to shrink and by 5% per round trip away
  from it (as CUBIC: careful where trouble was, quick elsewhere). Only a limit really used lately grows.
- Account-wide signals pause every new request: a 429 saying the budget is spent (`X-RateLimit-Remaining:
  0` or an `X-RateLimit-Reset`, `Signal.EXHAUSTED`) pauses until that reset, and shrinks x0.9 at most once per
  round trip (no halving at the end of slow start: a rate budget is answered by the pause and the pace, not
  by capacity); lone 429s making up `ACCOUNT_THROTTLE_SHARE` of one round trip's answers (a CDN's pages,
  say, with no headers) pause until the budget's next reset as the learned schedule predicts it, else the
  `Retry-After`, else a short backoff doubling while rounds keep doing so.
- A lone 429 (`Signal.THROTTLED`: no rate-limit header) pauses nothing: the caller retries that one request
  after its Retry-After. Once per round trip the limit shrinks by half the share of lone 429s among the
  round's answers (DCTCP's alpha/2): one 429 among 100 answers trims 0.5%, a round of nothing but 429s
  halves. Plain AIMD (x0.9 per round trip with any 429, this growth) at 1% lone 429s settles near 30 in
  flight (simulated), a quarter of what 500/s at 240 ms needs; the proportional cut costs about what the
  429s themselves cost. A share of
  at least `CONGESTED_THROTTLE_SHARE` is congestion: it ends slow start and marks the limit careful growth
  stays near.
- A lone 5xx or timeout is not congestion and shrinks nothing; failures making up `CONGESTION_FAILURE_SHARE`
  of one round trip's answers shrink x0.95, once per round trip; 8 failures in a row with no clean answer
  between pause every new request (0.1 s, doubling to 2 s while they go on), so a server that is down is
  not hammered while the run decides to give up.
- Shares are taken over at least `MIN_ROUND_ANSWERS` answers and need at least `MIN_ROUND_SIGNALS` of their
  kind, so with few requests in flight (slow start's first rounds) one or two random refusals are no share:
  at 1% lone 429s, two in a round of 33 answers happen one round in 25 and would end slow start near 50.
- The budget's window is learned from the reset times 429s name (`ResetSchedule`); with X-RateLimit-Limit
  that is the server's rate, which new requests are then paced at (a token bucket at `LEARNED_PACE` of it:
  all of it, since retries spend that budget too and a request the server refuses at a window's edge costs
  the budget nothing, only a pause until the reset that is due anyway). When what is left to send fits in
  what the current window has left (`budget_left`), the caller may start it unpaced: the end of a day.
  While paced, in flight is never held below `PACED_HEADROOM` x pace x round trip (Little's law): that
  many are needed to keep the pace, and the pace, not the concurrency, is what keeps the account in budget.
- An optional requests/second cap is a token bucket too, and `ceiling` bounds everything.

No I/O and no clock of its own: callers pass `now` (monotonic seconds), so the logic is tested alone.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from usage_pipeline.openrouter.rate_schedule import ResetSchedule

THROTTLE_DECREASE = 0.9  # an exhausted budget, at most once per round trip
FAILURE_DECREASE = 0.95  # a round trip whose failures reach CONGESTION_FAILURE_SHARE
GROWTH_PER_ROUND_TRIP = 0.05
LEARNED_PACE = 1.0  # pace at this share of the rate the server states (X-RateLimit-Limit per window)
PACED_HEADROOM = 1.5  # while paced, room for this many times pace x round trip in flight
NEAR_LAST_DECREASE = (0.95, 1.1)  # the band around the last limit that had to shrink: grow by one there
MIN_ROUND_ANSWERS = 20  # shares of a round trip are taken over at least this many answers ...
MIN_ROUND_SIGNALS = 3  # ... and a share of refusals or failures needs at least this many to be more than chance
ACCOUNT_THROTTLE_SHARE = 0.2  # lone 429s this share of a round trip: the account's budget is spent
CONGESTED_THROTTLE_SHARE = 0.05  # lone 429s this share of a round trip: congestion, not a stray refusal
CONGESTION_FAILURE_SHARE = 0.1  # failures this share of a round trip: the server struggles
MIN_ROUND_S = 0.05
FAILURES_BEFORE_PAUSE = 8  # failures in a row, no clean answer between, before everything pauses
FAILURE_PAUSE_S = 0.1  # the first such pause; it doubles while failures continue, up to MAX_FAILURE_PAUSE_S
MAX_FAILURE_PAUSE_S = 2.0
HINTLESS_PAUSE_S = 0.25  # first account-wide pause that no reset time or Retry-After bounds; then doubles
MAX_PAUSE_S = 60.0


class Signal(enum.Enum):
    """What one answer says about the server's capacity."""

    CLEAN = "clean"  # any answer that is not a refusal: 200, 404, a 4xx about the request itself
    THROTTLED = "throttled"  # a 429 without rate-limit headers: this request was refused
    EXHAUSTED = "exhausted"  # a 429 with X-RateLimit-Remaining: 0 or X-RateLimit-Reset: the account's budget
    FAILED = "failed"  # 5xx, an error page, a timeout, a broken connection


@dataclass
class AdaptiveLimit:
    """The shared controller. `wait_time(now)` says when a request may start; `started`/`finished` report."""

    ceiling: int
    max_rps: float | None = None
    initial: float = 32.0  # one round trip of doubling less than TCP-like 16: ~0.12 s of a 500/s budget
    floor: float = 1.0
    limit: float = field(init=False)
    in_flight: int = 0
    paused_until: float = 0.0
    slow_start: bool = True
    round_trip_s: float = 0.2  # smoothed latency of clean answers (a mean: Little's law wants one)
    throttled: int = 0  # 429s of either kind
    account_pauses: int = 0  # pauses of every request (exhausted budgets, shares of lone 429s)
    paused_s: float = 0.0  # seconds every new request was held by those pauses
    decreases: int = 0
    peak_in_flight: int = 0
    limit_at_last_decrease: float = 0.0
    schedule: ResetSchedule = field(default_factory=ResetSchedule)
    _last_decrease: float = -math.inf
    _saturated_at: float = -math.inf
    _hintless: int = 0
    _failing: int = 0  # failures (5xx, error pages, timeouts) since the last clean answer
    _tokens: float = 0.0
    _tokens_at: float | None = None
    _round_start: float = -math.inf
    _round_answers: int = 0
    _round_throttled: int = 0  # lone 429s in the current round trip
    _round_failed: int = 0
    _round_paused: bool = False

    def __post_init__(self) -> None:
        if self.ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {self.ceiling}")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ValueError(f"max_rps must be positive, got {self.max_rps}")
        self.limit = float(min(self.initial, self.ceiling))
        self._tokens = self._bucket_size()

    @property
    def learned_rps(self) -> float | None:
        """The pace the server's own budget allows, once its window is known."""
        rate = self.schedule.rate
        return None if rate is None else LEARNED_PACE * rate

    @property
    def pace_rps(self) -> float | None:
        """Requests/second to pace at: the configured cap, or the server's own budget once learned."""
        rates = [r for r in (self.max_rps, self.learned_rps) if r is not None]
        return min(rates) if rates else None

    @property
    def capacity(self) -> int:
        """Requests allowed in flight now: the limit, but never fewer than the pace needs."""
        allowed = self.limit
        pace = self.pace_rps
        if pace is not None:
            allowed = max(allowed, PACED_HEADROOM * pace * self.round_trip_s)
        return max(1, int(min(allowed, self.ceiling)))

    def _bucket_size(self) -> float:
        return max(1.0, (self.pace_rps or 0.0) / 20)  # a 50 ms burst at most: pacing stays smooth

    def _refill(self, now: float) -> None:
        rate = self.pace_rps
        if rate is None:
            return
        if self._tokens_at is not None:
            self._tokens = min(self._bucket_size(), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now

    def budget_left(self, now: float) -> int | None:
        """Requests the account's current budget window has left by our own count; None while unknown."""
        return self.schedule.budget_left(now)

    def wait_time(self, now: float, *, unpaced: bool = False) -> float:
        """0 when a request may start now; else seconds until it might (inf: until one finishes). `unpaced`:
        the pace does not apply (what is left fits in the window's budget, so it may all go now, up to the
        ceiling in flight); pauses still do."""
        if now < self.paused_until:
            return self.paused_until - now
        if self.in_flight >= (self.ceiling if unpaced else self.capacity):
            return math.inf
        rate = self.pace_rps
        if rate is not None and not unpaced:
            self._refill(now)
            if self._tokens < 1.0 - 1e-9:  # float rounding must not leave a wait of 1e-17 s
                return (1.0 - self._tokens) / rate
        return 0.0

    def spent(self, now: float) -> None:
        """A second request for a record already in flight started (a race): it spends the account's budget
        but holds no slot of its own."""
        self.schedule.started(now)

    def started(self, now: float) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self.in_flight >= 0.9 * self.limit:
            self._saturated_at = now
        self.schedule.started(now)
        if self.pace_rps is not None:
            self._refill(now)
            self._tokens = max(0.0, self._tokens - 1.0)  # an unpaced start leaves no debt to the pace

    def finished(self, signal: Signal, now: float, *, latency_s: float | None = None,
                 reset_at: float | None = None, retry_at: float | None = None, budget: int | None = None,
                 reset_stamp: float | None = None) -> None:
        """Report one answer; for a 429, `reset_at` is when its X-RateLimit-Reset says the budget resets,
        `retry_at` when its Retry-After says to try again (both monotonic), `budget` its X-RateLimit-Limit
        (requests per window) and `reset_stamp` the reset as stamped (epoch seconds); any may be None."""
        self.in_flight = max(0, self.in_flight - 1)
        self._tally(signal, now)
        if signal is Signal.CLEAN:
            self._failing = 0
            if latency_s is not None:
                self.round_trip_s += 0.1 * (latency_s - self.round_trip_s)
            if now - self._saturated_at <= 2 * self.round_trip_s:  # only a limit really used lately may grow
                self.limit = min(float(self.ceiling), self.limit + self._step())
        elif signal is Signal.EXHAUSTED:
            self.throttled += 1
            self._decrease(now, THROTTLE_DECREASE)
            if reset_at is not None:
                self.schedule.learn(reset_at, now, budget, reset_stamp)
            self._pause_everything(now, reset_at, retry_at)
        elif signal is Signal.THROTTLED:
            self.throttled += 1
            if not self._round_paused and self._sizeable(self._round_throttled, ACCOUNT_THROTTLE_SHARE):
                self._pause_everything(now, None, retry_at)
        else:
            self._failing += 1
            if self._failing >= FAILURES_BEFORE_PAUSE:  # the server, not a record, is failing: let it breathe
                pause = min(MAX_FAILURE_PAUSE_S, FAILURE_PAUSE_S * 2 ** (self._failing - FAILURES_BEFORE_PAUSE))
                self._hold(now, now + pause)

    def _tally(self, signal: Signal, now: float) -> None:
        """Count the answer into the current round trip, closing the previous one first if it is over."""
        if now - self._round_start >= max(self.round_trip_s, MIN_ROUND_S):
            self._close_round(now)
        self._round_answers += 1
        if signal is Signal.THROTTLED:
            self._round_throttled += 1
        elif signal is Signal.FAILED:
            self._round_failed += 1

    def _close_round(self, now: float) -> None:
        """Once per round trip: shrink in proportion to the lone 429s, and for a sizeable share of failures."""
        answers = self._round_answers
        if answers:
            throttled_share = self._round_throttled / answers
            factor = min(1.0 - throttled_share / 2,
                         FAILURE_DECREASE if self._sizeable(self._round_failed, CONGESTION_FAILURE_SHARE) else 1.0)
            if factor < 1.0:
                congestion = (self._sizeable(self._round_throttled, CONGESTED_THROTTLE_SHARE)
                              or self._sizeable(self._round_failed, CONGESTION_FAILURE_SHARE))
                self._decrease(now, factor, congestion=congestion)
            if not self._round_paused:
                self._hintless = 0
        self._round_start = now
        self._round_answers = self._round_throttled = self._round_failed = 0
        self._round_paused = False

    def _sizeable(self, count: int, share: float) -> bool:
        """Whether `count` answers of a kind are `share` of the current round trip, and more than chance."""
        return count >= MIN_ROUND_SIGNALS and count >= share * max(self._round_answers, MIN_ROUND_ANSWERS)

    def _pause_everything(self, now: float, reset_at: float | None, retry_at: float | None) -> None:
        """Hold every new request until the account's budget resets: the named reset, else the learned
        schedule's next one, else the Retry-After, else a short backoff that doubles per round trip."""
        resume = reset_at if reset_at is not None else self.schedule.next_reset(now)
        if resume is None:
            resume = retry_at
        if resume is None:
            if not self._round_paused:
                self._hintless += 1
            resume = now + HINTLESS_PAUSE_S * 2 ** min(max(self._hintless, 1) - 1, 8)
        if not self._round_paused:
            self.account_pauses += 1
        self._round_paused = True
        self._hold(now, min(resume, now + MAX_PAUSE_S))

    def _hold(self, now: float, until: float) -> None:
        if until > self.paused_until:
            self.paused_s += until - max(now, self.paused_until)
            self.paused_until = until

    def _step(self) -> float:
        """Growth per clean answer; a limit's worth of answers is one round trip."""
        if self.slow_start:
            return 1.0
        low, high = NEAR_LAST_DECREASE
        near = low * self.limit_at_last_decrease <= self.limit <= high * self.limit_at_last_decrease
        per_round_trip = 1.0 if near else max(1.0, GROWTH_PER_ROUND_TRIP * self.limit)
        return per_round_trip / self.limit

    def _decrease(self, now: float, factor: float, *, congestion: bool = True) -> None:
        """Shrink by `factor`. Congestion also ends slow start and is remembered, at most once per round trip
        (requests sent before the last decrease are still answering); a trim below that is not."""
        if congestion:
            if now - self._last_decrease < max(self.round_trip_s, MIN_ROUND_S):
                return
            self.slow_start = False
            self._last_decrease = now
            self.decreases += 1
            self.limit_at_last_decrease = self.limit
        self.limit = max(self.floor, self.limit * factor)
