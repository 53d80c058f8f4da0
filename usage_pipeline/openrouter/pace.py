"""How fast record fetches go: one pace shared by every `GET /generation` of a run, assuming no particular
limiter (the limit is undocumented): a concurrency cap held only while a request is in flight; a rate set by
AIMD once per round trip, as TCP's slow start and fast recovery (a cut sized by what the server accepted); and
a pause for every request on account-wide signals only (a 429 saying the budget is spent, or lone 429s making
up a large share). Pacing a little above what the server accepts is what a rate limit wants: refused requests
spend no budget, pacing below loses budget for good on fixed and sliding windows."""

from __future__ import annotations

import array
import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

from usage_pipeline.openrouter.records import Answer, Kind

INITIAL_WINDOW = 32  # requests per round trip before any answer (TCP starts at 10, RFC 6928)
HEADROOM = 0.05  # pace this much above what the server accepted; grow by as much per round trip
DELIVERY_ROUNDS = 8  # the accepted rate is measured over this many round trips
LARGE_SHARE = 0.2  # lone 429s or failures this share of a round trip speak for the account or server
MIN_SIGNALS = 3  # ... and at least this many: one or two at random are no share ...
MIN_ANSWERS = 20  # ... of at least this many answers: a round trip spent paused has too few to judge by
MIN_ROUND_S = 0.05  # a round trip of a server on the same machine is a millisecond: too short to judge by
BURST_S = 0.02  # the rate's bucket: requests it may send at once, as seconds of the rate (loop hiccups)
TIMEOUT_P99S = 2.0  # an attempt still unanswered at twice the recent p99 is probably hung
MIN_TIMEOUT_S = 0.5
LATENCY_SAMPLE = 1000
BACKOFF_S = 0.25  # an account-wide pause no header bounds; doubles while they continue


class Rate(AsyncLimiter):
    """aiolimiter's leaky bucket, fixed where the pinned 1.3.0 fails (tests hold both): its rate is fixed at
    creation, and float residue in its level re-arms a timer 1e-18 s ahead until the clock moves (`_leak` rounds)."""

    def __init__(self, rps: float) -> None:
        super().__init__(max(1.0, rps * BURST_S), max(1.0, rps * BURST_S) / rps)

    @property
    def rps(self) -> float:
        return self._rate_per_sec

    def _leak(self) -> None:
        super()._leak()
        self._level = round(self._level, 9)

    def set_rate(self, rps: float) -> None:
        self._leak()
        self.max_rate = max(1.0, rps * BURST_S)
        self.time_period = self.max_rate / rps
        self._rate_per_sec = rps
        self._wake_next()


@dataclass
class PaceFigures:
    """What the pace did, for the run's metadata."""

    throttled: int = 0  # 429s of either kind
    throttled_lone: int = 0  # of which without rate-limit headers
    account_pauses: int = 0
    paused_s: float = 0.0
    decreases: int = 0
    peak_in_flight: int = 0
    throttled_rps: array.array = field(default_factory=lambda: array.array("d"))  # accepted at each throttle cut


class Pace:
    """`async with pace.request():` around each attempt; `answered()` after it. One event loop."""

    def __init__(self, max_concurrency: int, max_rps: float | None, timeout_s: float) -> None:
        self.max_rps = max_rps or math.inf
        self.round_trip_s = 0.2  # smoothed latency of clean answers, until the first is measured
        self.rps = min(self.max_rps, INITIAL_WINDOW / self.round_trip_s)
        self.rate = Rate(self.rps)
        self.slow_start = True
        self.slots = asyncio.Semaphore(max_concurrency)
        self._turn = asyncio.Lock()
        self.timeout_s = timeout_s
        self.figures = PaceFigures()
        self.latencies = array.array("d")
        self._p99 = math.inf
        self._resume_at = 0.0
        self._open = asyncio.Event()  # set unless every request is paused
        self._open.set()
        self._reopen: asyncio.TimerHandle | None = None
        self._backoff = 0
        self._in_flight = 0
        self._round_start = 0.0
        self._answers = self._lone = self._failed = self._held = 0
        self._signal = False
        self._cut_at: float | None = None  # the last decrease: signals for requests sent before it are old news
        self._accepted = 0  # answers this round trip that spent budget (all but account-wide 429s)
        self.accepted_rps: float | None = None  # their rate over the last DELIVERY_ROUNDS round trips
        self._delivered: deque[tuple[float, int]] = deque([(0.0, 0)])  # (round trip's end, accepted in it)

    @asynccontextmanager
    async def request(self) -> AsyncIterator[float]:
        """Hold a slot, wait out any pause and take the rate's next turn; yields the attempt's timeout."""
        async with self.slots:
            async with self._turn:  # one waiter at a time: aiolimiter re-arms its timer for each
                await self._open.wait()  # no turn of the rate is taken while paused, so none piles up
                if not self.rate.has_capacity():
                    self._held += 1
                await self.rate.acquire()
            await self._open.wait()  # a pause may have begun meanwhile
            if self._cut_at is None:  # the first request: measuring starts now
                self._cut_at = self._round_start = asyncio.get_running_loop().time()
                self._delivered = deque([(self._cut_at, 0)])
            self._in_flight += 1
            self.figures.peak_in_flight = max(self.figures.peak_in_flight, self._in_flight)
            try:
                yield self.attempt_timeout_s
            finally:
                self._in_flight -= 1

    @property
    def round_s(self) -> float:
        """A round trip, as the pace counts them: the smoothed latency, at least `MIN_ROUND_S`."""
        return max(MIN_ROUND_S, self.round_trip_s)

    @property
    def attempt_timeout_s(self) -> float:
        """How long the next attempt may take: twice the recent p99 of clean answers, within bounds."""
        return min(self.timeout_s, max(MIN_TIMEOUT_S, TIMEOUT_P99S * self._p99))

    def answered(self, answer: Answer, latency_s: float) -> None:
        """Count one answer into the round trip; act on what it says about the account."""
        now = asyncio.get_running_loop().time()
        if now - self._round_start >= self.round_s:
            self._close_round(now)
        self._answers += 1
        fresh = self._cut_at is not None and now - latency_s >= self._cut_at  # sent since the last decrease
        if answer.kind is Kind.THROTTLED and answer.exhausted:
            self.figures.throttled += 1
            self._pause(now, answer.reset_after_s if answer.reset_after_s is not None else answer.retry_after_s)
            self._signal = self._signal or fresh
            return
        self._accepted += 1
        if answer.kind is Kind.THROTTLED:
            self.figures.throttled += 1
            self.figures.throttled_lone += 1
            self._lone += 1
            if self._large(self._lone):
                self._backoff += not self._signal
                self._pause(now, BACKOFF_S * 2 ** min(self._backoff - 1, 8))
                self._signal = self._signal or fresh
        elif answer.kind is Kind.TRANSIENT:
            self._failed += 1
        else:
            self._clean(latency_s)

    def _clean(self, latency_s: float) -> None:
        self.round_trip_s += 0.1 * (latency_s - self.round_trip_s)
        self.latencies.append(latency_s)  # 8 bytes an answer: a million-record day keeps 8 MB
        if len(self.latencies) % (20 if len(self.latencies) <= 100 else 100) == 0:  # soon, then every 100
            recent = sorted(self.latencies[-LATENCY_SAMPLE:])
            self._p99 = recent[int(0.99 * (len(recent) - 1))]

    def _large(self, count: int) -> bool:
        return count >= MIN_SIGNALS and count >= LARGE_SHARE * max(self._answers, MIN_ANSWERS)

    def _pause(self, now: float, wait_s: float | None) -> None:
        """Every request waits until `now + wait_s` (a named reset or Retry-After; None: no wait)."""
        until = now + (wait_s or 0.0)
        if until <= max(now, self._resume_at):
            return
        if self._resume_at <= now:
            self.figures.account_pauses += 1
        self.figures.paused_s += until - max(now, self._resume_at)
        self._resume_at = until
        self._open.clear()
        if self._reopen is not None:
            self._reopen.cancel()
        self._reopen = asyncio.get_running_loop().call_at(until, self._open.set)

    def _close_round(self, now: float) -> None:
        """Once per round trip: cut after a fresh signal, halve after many failures, else grow if it held back."""
        self._smooth_delivery(now)
        if self._signal and self.accepted_rps is not None:  # at most halved: stalls and pauses are not a ~0 budget
            self.figures.throttled_rps.append(self.accepted_rps)
            self._cut(now, min(self.rps, max(self.rps / 2, (1 + HEADROOM) * self.accepted_rps)))
        elif self._large(self._failed):
            self._cut(now, self.rps / 2)
        else:
            self._backoff = 0
            if self._held:  # growth per round trip of time: a slow rate's answers are few, its rounds long
                rounds = min(DELIVERY_ROUNDS, (now - self._round_start) / self.round_s)
                self.rps *= (2 if self.slow_start else 1 + HEADROOM) ** rounds
        self.rps = max(1.0, min(self.rps, self.max_rps))
        self.rate.set_rate(self.rps)
        self._round_start = now
        self._answers = self._lone = self._failed = self._held = self._accepted = 0
        self._signal = False

    def _smooth_delivery(self, now: float) -> None:
        """The accepted rate over `DELIVERY_ROUNDS` round trips: spans a limiter's bursts, still follows a new limit."""
        self._delivered.append((now, self._accepted))
        horizon = now - DELIVERY_ROUNDS * self.round_s
        while len(self._delivered) > 2 and self._delivered[1][0] <= horizon:
            self._delivered.popleft()
        span = now - self._delivered[0][0]
        if span > 0:
            self.accepted_rps = sum(count for _, count in list(self._delivered)[1:]) / span

    def _cut(self, now: float, rps: float) -> None:
        self.figures.decreases += 1
        self.rps = max(1.0, rps)
        self.slow_start = False
        self._cut_at = now

    @property
    def limit_rps(self) -> float | None:
        """The request limit the run met: the median of what the server accepted each time it said the budget
        was spent (the limit as learned), or the configured cap when lower or when it never said so; None
        when neither is known (no throttling, no cap)."""
        throttled = sorted(self.figures.throttled_rps)
        learned = throttled[len(throttled) // 2] if throttled else math.inf
        limit = min(learned, self.max_rps)
        return None if math.isinf(limit) else limit

    def percentile_ms(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1) if ordered else 0.0
