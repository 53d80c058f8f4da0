"""The account-wide request limiters: fixed windows, a token bucket and a sliding log, one interface.

A client tuned to one limiter can still fail on another, so the emulator offers three (`--rate-limiter`,
runtime key `rate_limiter`). Each spends one budget of `max(1, round(rps * window_s))` requests over every
`/api/v1` path and key, takes nothing from a refused request, and says in its `Refusal` when the next
request would fit; `hostility.rate_limited` shapes the 429 alike for all three. `rps` 0 switches any off.
They are small pure classes: `acquire(now)` takes the epoch time, `time.time()` when left out, so tests
drive them with any clock. Only the event loop calls them, so they need no lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

FIXED, TOKEN_BUCKET, SLIDING = "fixed", "token-bucket", "sliding"
LIMITER_KINDS: tuple[str, ...] = (FIXED, TOKEN_BUCKET, SLIDING)
# The bucket's instants are float sums of epoch seconds (an ulp of today's epoch is 0.24 µs): a request this
# close to its token counts as on time, or rounding alone would refuse one that fits.
BUCKET_TOLERANCE_S = 1e-6


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the account-wide limiter refused: its budget and when the next request would fit."""

    budget: int
    reset_epoch_ms: int
    retry_after_s: int


class RequestLimiter(Protocol):
    """What the emulator asks of an account-wide limiter; `rps` and `window_s` may change while it runs."""

    rps: float
    window_s: float

    @property
    def budget(self) -> int: ...

    def acquire(self, now: float | None = None) -> Refusal | None: ...


def epoch_ms_up(at: float) -> int:
    """`at` (epoch seconds) in whole milliseconds, rounded up: never before `at`, even after float rounding."""
    ms = math.ceil(at * 1000)
    return ms + 1 if ms / 1000 < at else ms


def refusal_until(budget: int, at: float, now: float) -> Refusal:
    """The refusal of a request made at `now` that would fit from `at` on."""
    return Refusal(budget, epoch_ms_up(at), max(1, math.ceil(at - now)))


class _Budgeted:
    def __init__(self, rps: float, window_s: float) -> None:
        self.rps = rps
        self.window_s = window_s

    @property
    def budget(self) -> int:
        return max(1, round(self.rps * self.window_s))

    @property
    def off(self) -> bool:
        return self.rps <= 0 or self.window_s <= 0


class AccountLimiter(_Budgeted):
    """Fixed windows (`fixed`): `budget` requests per window, windows aligned to multiples of `window_s` since
    the epoch; a refusal's reset is the window's end. A burst straddling a boundary may get two budgets."""

    def __init__(self, rps: float, window_s: float) -> None:
        super().__init__(rps, window_s)
        self._window = -1
        self._used = 0

    def acquire(self, now: float | None = None) -> Refusal | None:
        """None when the request fits the current window's budget, else the refusal to answer."""
        if self.off:
            return None
        now = time.time() if now is None else now
        window = math.floor(now / self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        budget = self.budget
        if self._used < budget:
            self._used += 1
            return None
        reset = (window + 1) * self.window_s
        return Refusal(budget, int(math.ceil(reset * 1000)), max(1, math.ceil(reset - now)))


FixedWindowLimiter = AccountLimiter


class TokenBucketLimiter(_Budgeted):
    """A token bucket (`token-bucket`): `budget` tokens (a burst of one window), full at first, refilled
    continuously at `rps` tokens/s up to `budget`; an accepted request takes a token, a refused one none. A
    refusal's reset is when one whole token will be there.

    The bucket is kept as the instant it will be full again (`_full_at`, GCRA's theoretical arrival time): at
    `now` it holds `budget - (full_at - now) * rps` tokens, so one whole token is there from `full_at -
    (budget - 1) / rps` on, which is also the reset a refusal reports: a retry at it fits.
    """

    def __init__(self, rps: float, window_s: float) -> None:
        super().__init__(rps, window_s)
        self._full_at = -math.inf

    def acquire(self, now: float | None = None) -> Refusal | None:
        if self.off:
            return None
        now = time.time() if now is None else now
        budget, interval = self.budget, 1 / self.rps
        token_at = self._full_at - (budget - 1) * interval
        if now < token_at - BUCKET_TOLERANCE_S:
            return refusal_until(budget, token_at, now)
        self._full_at = max(self._full_at, now) + interval
        return None


class SlidingLogLimiter(_Budgeted):
    """A sliding log (`sliding`): at most `budget` accepted requests in any trailing `window_s` seconds (a
    request at `a` counts until `a + window_s`); refused requests are not logged. A refusal's reset is when the
    oldest accepted request in the window leaves it."""

    def __init__(self, rps: float, window_s: float) -> None:
        super().__init__(rps, window_s)
        self._accepted: deque[float] = deque()

    def acquire(self, now: float | None = None) -> Refusal | None:
        if self.off:
            return None
        now = time.time() if now is None else now
        log, window_s, budget = self._accepted, self.window_s, self.budget
        while log and log[0] + window_s <= now:
            log.popleft()
        if len(log) < budget:
            log.append(now)
            return None
        # room comes when all but budget - 1 have left (the oldest, unless the budget shrank meanwhile)
        return refusal_until(budget, log[len(log) - budget] + window_s, now)


_KINDS: dict[str, type[AccountLimiter | TokenBucketLimiter | SlidingLogLimiter]] = {
    FIXED: AccountLimiter, TOKEN_BUCKET: TokenBucketLimiter, SLIDING: SlidingLogLimiter}


def make_limiter(kind: str, rps: float, window_s: float) -> RequestLimiter:
    """A fresh limiter of `kind` (one of LIMITER_KINDS); ValueError naming the setting otherwise."""
    try:
        return _KINDS[kind](rps, window_s)
    except (KeyError, TypeError):
        raise ValueError(f"rate_limiter must be one of {', '.join(LIMITER_KINDS)}, got {kind!r:.40}") from None
