"""How many record fetches may be in flight, and when the next may start: one controller for all of them.

OpenRouter publishes no rate limit for `GET /generation`; it answers 429 when a limit is hit. So the
limit is discovered the way TCP discovers a path's capacity (AIMD):

- it starts small and grows while answers come back clean: by one per answer until the first congestion
  signal (doubling per round trip), then by one per round trip near the limit where it last had to
  shrink, and by 5% per round trip away from it (as CUBIC does: careful where trouble was, quick elsewhere);
- it shrinks on a 429 (x0.9; x0.5 for the first, which ends the doubling), and on a 5xx or a timeout
  (x0.95), at most once per round trip, so one burst of refusals counts once; a rare hung request
  costs little; 8 failures in a row with no clean answer between pause every new request (0.1 s, doubling
  to 2 s while they go on), so a server that is down is not hammered while the run decides to give up;
- a 429 also pauses every new request until the server says its budget resets: `X-RateLimit-Reset` (epoch
  ms) when it is sent; a 429 without it (a CDN's HTML page, say) waits for the budget's next reset as the
  server's own reset times predict it (the last one named, plus whole windows), else for its
  `Retry-After` (whole seconds, so rounded up), else for a short backoff that doubles while such 429s
  keep coming;
- once two 429s have named resets a window apart, `X-RateLimit-Limit` per window is the server's rate:
  new requests are paced just under it (a token bucket), so later windows meet few 429s;
- an optional requests/second cap is a token bucket too, and `ceiling` bounds everything.

No I/O and no clock of its own: callers pass `now` (monotonic seconds), so the logic is tested alone.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

THROTTLE_DECREASE = 0.9
SLOW_START_EXIT = 0.5  # doubling per round trip overshoots by up to 2x when the first 429 comes
FAILURE_DECREASE = 0.95
GROWTH_PER_ROUND_TRIP = 0.05
LEARNED_PACE = 0.98  # pace at this share of a rate the server states (X-RateLimit-Limit per window)
NEAR_LAST_DECREASE = (0.95, 1.1)  # the band around the last limit that had to shrink: grow by one there
FAILURES_BEFORE_PAUSE = 8  # failures in a row, no clean answer between, before everything pauses
FAILURE_PAUSE_S = 0.1  # the first such pause; it doubles while failures continue, up to MAX_FAILURE_PAUSE_S
MAX_FAILURE_PAUSE_S = 2.0
HINTLESS_PAUSE_S = 0.25  # first pause after a 429 that names no reset time; doubles while they continue
MAX_PAUSE_S = 60.0


class Signal(enum.Enum):
    """What one answer says about the server's capacity."""

    CLEAN = "clean"  # any answer that is not a refusal: 200, 404, a 4xx about the request itself
    THROTTLED = "throttled"  # 429
    FAILED = "failed"  # 5xx, an error page, a timeout, a broken connection


@dataclass
class AdaptiveLimit:
    """The shared controller. `wait_time(now)` says when a request may start; `started`/`finished` report."""

    ceiling: int
    max_rps: float | None = None
    initial: float = 16.0
    floor: float = 1.0
    limit: float = field(init=False)
    in_flight: int = 0
    paused_until: float = 0.0
    slow_start: bool = True
    round_trip_s: float = 0.2  # smoothed latency of clean answers
    throttled: int = 0
    decreases: int = 0
    peak_in_flight: int = 0
    limit_at_last_decrease: float = 0.0
    known_reset: float = -math.inf  # the latest budget reset time a 429 named
    reset_period: float | None = None  # the shortest gap seen between two named reset times
    learned_rps: float | None = None  # the server's budget per second, once its window is known
    _last_decrease: float = -math.inf
    _saturated_at: float = -math.inf
    _hintless: int = 0
    _failing: int = 0  # failures (5xx, error pages, timeouts) since the last clean answer
    _tokens: float = 0.0
    _tokens_at: float | None = None

    def __post_init__(self) -> None:
        if self.ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {self.ceiling}")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ValueError(f"max_rps must be positive, got {self.max_rps}")
        self.limit = float(min(self.initial, self.ceiling))
        self._tokens = self._bucket_size()

    @property
    def pace_rps(self) -> float | None:
        """Requests/second to pace at: the configured cap, or the server's own budget once learned."""
        rates = [r for r in (self.max_rps, self.learned_rps) if r is not None]
        return min(rates) if rates else None

    def _bucket_size(self) -> float:
        return max(1.0, (self.pace_rps or 0.0) / 20)  # a 50 ms burst at most: pacing stays smooth

    def _refill(self, now: float) -> None:
        rate = self.pace_rps
        if rate is None:
            return
        if self._tokens_at is not None:
            self._tokens = min(self._bucket_size(), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now

    def wait_time(self, now: float) -> float:
        """0 when a request may start now; else seconds until it might (inf: until one finishes)."""
        if now < self.paused_until:
            return self.paused_until - now
        if self.in_flight >= max(1, int(self.limit)):
            return math.inf
        rate = self.pace_rps
        if rate is not None:
            self._refill(now)
            if self._tokens < 1.0 - 1e-9:  # float rounding must not leave a wait of 1e-17 s
                return (1.0 - self._tokens) / rate
        return 0.0

    def started(self, now: float) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self.in_flight >= 0.9 * self.limit:
            self._saturated_at = now
        if self.pace_rps is not None:
            self._refill(now)
            self._tokens -= 1.0

    def finished(self, signal: Signal, now: float, *, latency_s: float | None = None,
                 reset_at: float | None = None, retry_at: float | None = None, budget: int | None = None) -> None:
        """Report one answer; for a 429, `reset_at` is when its X-RateLimit-Reset says the budget resets,
        `retry_at` when its Retry-After says to try again (both monotonic) and `budget` its
        X-RateLimit-Limit (requests per window); any may be None."""
        self.in_flight = max(0, self.in_flight - 1)
        if signal is Signal.CLEAN:
            self._hintless = 0
            self._failing = 0
            if latency_s is not None:
                self.round_trip_s += 0.1 * (latency_s - self.round_trip_s)
            if now - self._saturated_at <= 2 * self.round_trip_s:  # only a limit really used lately may grow
                self.limit = min(float(self.ceiling), self.limit + self._step())
        elif signal is Signal.THROTTLED:
            self.throttled += 1
            # The first 429 also undoes the overshoot of doubling per round trip.
            self._decrease(now, THROTTLE_DECREASE * (SLOW_START_EXIT if self.slow_start else 1.0))
            if reset_at is not None:
                self._learn_reset(reset_at, budget)
                resume_at = reset_at
            elif (predicted := self._next_reset(now)) is not None:
                resume_at = predicted
            elif retry_at is not None:
                resume_at = retry_at
            else:
                self._hintless += 1
                resume_at = now + HINTLESS_PAUSE_S * 2 ** min(self._hintless - 1, 8)
            self.paused_until = max(self.paused_until, min(resume_at, now + MAX_PAUSE_S))
        else:
            self._decrease(now, FAILURE_DECREASE)
            self._failing += 1
            if self._failing >= FAILURES_BEFORE_PAUSE:  # the server, not a record, is failing: let it breathe
                pause = min(MAX_FAILURE_PAUSE_S, FAILURE_PAUSE_S * 2 ** (self._failing - FAILURES_BEFORE_PAUSE))
                self.paused_until = max(self.paused_until, now + pause)

    def _learn_reset(self, reset_at: float, budget: int | None) -> None:
        """Budgets reset on a schedule: two reset times a whole window apart tell the window's length, and
        with X-RateLimit-Limit the server's rate, which new requests are then paced at (a little under it,
        so a window's edge does not meet a burst)."""
        gap = reset_at - self.known_reset
        if gap > 0.01 and math.isfinite(gap) and gap < MAX_PAUSE_S:
            self.reset_period = gap if self.reset_period is None else min(self.reset_period, gap)
        self.known_reset = max(self.known_reset, reset_at)
        if budget is not None and budget > 0 and self.reset_period is not None:
            self.learned_rps = LEARNED_PACE * budget / self.reset_period

    def _next_reset(self, now: float) -> float | None:
        """The budget's next reset, from the last one a 429 named and the learned period; None if unknown."""
        if self.known_reset > now:
            return self.known_reset
        if self.reset_period is None or not math.isfinite(self.known_reset):
            return None
        windows = math.ceil((now - self.known_reset) / self.reset_period)
        return self.known_reset + max(1, windows) * self.reset_period

    def _step(self) -> float:
        """Growth per clean answer; a limit's worth of answers is one round trip."""
        if self.slow_start:
            return 1.0
        low, high = NEAR_LAST_DECREASE
        near = low * self.limit_at_last_decrease <= self.limit <= high * self.limit_at_last_decrease
        per_round_trip = 1.0 if near else max(1.0, GROWTH_PER_ROUND_TRIP * self.limit)
        return per_round_trip / self.limit

    def _decrease(self, now: float, factor: float) -> None:
        self.slow_start = False
        if now - self._last_decrease < max(self.round_trip_s, 0.05):
            return  # the same burst: requests sent before the last decrease are still answering
        self._last_decrease = now
        self.decreases += 1
        self.limit_at_last_decrease = self.limit
        self.limit = max(self.floor, self.limit * factor)
