"""The account's budget windows, learned from the reset times its 429s name (`X-RateLimit-Reset`).

A budget of `X-RateLimit-Limit` requests resets on a schedule. Two named reset times are a whole number of
windows apart, so the window is not simply their gap: a client that paused for four windows would learn a
four-second window and pace at a quarter of the real rate, and a pace that is too low never meets another
429 to correct it. Two facts bound the window instead:

- every gap between named resets is a multiple of it, so it divides their (approximate) greatest common
  divisor `G`;
- a 429 received at `now` naming `reset_at` is inside a window that ends then, so the window is at least
  `reset_at - now`; the longest such remainder seen is `L`.

The window taken is the longest that fits both: `G / n` with the largest n such that `G / n >= L` (L less
5%, so a remainder measured a hair over a whole window cannot halve it), and never under `MIN_WINDOW_S`.
It errs short (a pace too high), never long: a pace too high meets 429s early in windows, whose remainders
raise `L` until the estimate is right, while a pace too low would be stuck.

Erring short has a price, measured: at the start of a day the first two 429s come late in their windows
(the client is still ramping up), `L` is a third of the window, and the pace taken is three times the
budget; the burst that follows is refused and paused, about half a second of a 500/s day. A third fact
bounds the window from our own side: a 429 that says the budget is spent, answered at `now`, means the
window ending at `reset_at` held the whole budget. If our own requests alone could have spent it, the
`EXPLAINED_SHARE` x budget most recent starts before `now` reach back no further than the window's start,
so the window is at least `reset_at - t` with `t` the start that many back (`E`). Another client of the
same account spends budget too, which makes `E` too long; so it holds only while 429s keep renewing it,
and is dropped after `EXPLAINED_WINDOWS` windows without one, when the window falls back to `G`, `L` and
erring short.

Our own starts in the current window also say what it has left (`budget_left`): at the end of a day the
last requests need not be paced, the window's budget is there to spend now, and every second sooner they
go is a second sooner their retries (1 s behind a Retry-After) are due.

Gaps are taken between the server's own reset stamps (epoch ms, exact) when the caller passes them:
converted through two client clocks they carry milliseconds of jitter, and the divisor of 1.0 s and 1.03 s
is 0.03 s. Resets that fit no grid (a sliding window, say) have a divisor under `MIN_WINDOW_S`, taken as
unknown: then there is no pace, only the pause until each reset. No I/O, no clock: times are passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

MAX_WINDOW_S = 60.0  # a named reset further away than this is not a budget window we can learn from
GAP_TOLERANCE_S = 0.02  # reset stamps are whole milliseconds (and, without stamps, converted times)
MIN_WINDOW_S = 0.1  # a window estimated shorter than this means the resets follow no grid we can read
REMAINDER_SLACK = 0.95
EXPLAINED_SHARE = 0.9  # our starts making up this share of the budget are taken to have spent it (hedges, unseen)
START_LOG = 65_536  # recent starts kept (a budget over ~58,000 a window gets no bound from them)
EXPLAINED_WINDOWS = 3  # windows without a renewing 429 after which the bound from our own starts is dropped


def approximate_gcd(a: float, b: float, tolerance: float = GAP_TOLERANCE_S) -> float:
    """The greatest common divisor of two positive durations, up to `tolerance` (Euclid on floats)."""
    while True:
        if a < b:
            a, b = b, a
        if b <= tolerance:
            return a
        remainder = a % b
        if remainder <= tolerance or b - remainder <= tolerance:
            return b
        a, b = b, remainder


@dataclass
class ResetSchedule:
    """What the named reset times say: the latest one, the window length, and the budget per window."""

    known_reset: float = -math.inf  # the latest reset time a 429 named (monotonic seconds)
    budget: int | None = None  # X-RateLimit-Limit: requests per window
    _latest_stamp: float = -math.inf  # the latest reset as the server stamped it (epoch seconds), or as known_reset
    _gaps_gcd: float | None = None
    _longest_remainder: float = 0.0
    _explained: float = 0.0  # E: the window our own starts say it is at least (0: no such bound)
    _explained_at: float = -math.inf
    _starts: deque[float] = field(default_factory=lambda: deque(maxlen=START_LOG))
    _counted_reset: float | None = None  # the reset ending the window `_in_window` counts
    _in_window: int = 0

    @property
    def period(self) -> float | None:
        """The window length in seconds, once two reset times a window or more apart were named."""
        if self._gaps_gcd is None or self._gaps_gcd < MIN_WINDOW_S:
            return None
        bound = max(REMAINDER_SLACK * max(self._longest_remainder, self._explained), MIN_WINDOW_S)
        return self._gaps_gcd / max(1, math.floor(self._gaps_gcd / bound + 1e-9))

    @property
    def rate(self) -> float | None:
        """The server's budget per second (X-RateLimit-Limit over the window), once both are known."""
        period = self.period
        if period is None or self.budget is None:
            return None
        return self.budget / period

    def started(self, now: float) -> None:
        """One of our own requests started at `now`."""
        self._starts.append(now)
        reset = self.next_reset(now)
        if not self._counting(reset):
            self._counted_reset, self._in_window = reset, 0
        self._in_window += 1
        self.forget_stale(now)

    def budget_left(self, now: float) -> int | None:
        """Requests the current window has left by our own count (None: no window or budget known). Another
        client of the account may have spent some: then a 429 says so, and the pause follows as ever."""
        reset = self.next_reset(now)
        if reset is None or self.budget is None:
            return None
        return self.budget - (self._in_window if self._counting(reset) else 0)

    def _counting(self, reset: float | None) -> bool:
        """Whether `_in_window` counts the window ending at `reset` (a named reset and the one projected for
        it differ by the clocks' jitter)."""
        return (reset is not None and self._counted_reset is not None
                and abs(reset - self._counted_reset) <= GAP_TOLERANCE_S)

    def learn(self, reset_at: float, now: float, budget: int | None, stamp: float | None = None) -> None:
        """One 429 received at `now` named `reset_at` (monotonic), as the server stamped it `stamp` (epoch
        seconds; gaps are taken between stamps when given), maybe with its window's budget."""
        remainder = reset_at - now
        if 0 < remainder <= MAX_WINDOW_S:
            self._longest_remainder = max(self._longest_remainder, remainder)
        spent = budget if budget is not None and budget > 0 else self.budget
        explaining = None if spent is None else math.ceil(EXPLAINED_SHARE * spent)  # starts that spend it
        if explaining is not None and explaining <= len(self._starts):
            own_from = self._starts[-explaining]
            if 0 < reset_at - own_from <= MAX_WINDOW_S:
                self._explained, self._explained_at = reset_at - own_from, now
        stamp = reset_at if stamp is None else stamp
        gap = stamp - self._latest_stamp
        if GAP_TOLERANCE_S < gap <= MAX_WINDOW_S:  # -inf before the first: no gap
            self._gaps_gcd = gap if self._gaps_gcd is None else approximate_gcd(self._gaps_gcd, gap)
        if stamp >= self._latest_stamp:
            self._latest_stamp, self.known_reset = stamp, reset_at
        if budget is not None and budget > 0:
            self.budget = budget

    def forget_stale(self, now: float) -> None:
        """Drop the bound from our own starts once no 429 renewed it for `EXPLAINED_WINDOWS` windows: a pace
        that meets no 429 may be too low (another client spent budget when it was learned), and only the
        err-short estimate finds out."""
        if self._explained and (period := self.period) is not None \
                and now - self._explained_at > EXPLAINED_WINDOWS * period:
            self._explained = 0.0

    def next_reset(self, now: float) -> float | None:
        """The budget's next reset after `now`: the last one named, or that plus whole windows; None if unknown."""
        if self.known_reset > now:
            return self.known_reset
        period = self.period
        if period is None or not math.isfinite(self.known_reset):
            return None
        windows = math.ceil((now - self.known_reset) / period)
        return self.known_reset + max(1, windows) * period
