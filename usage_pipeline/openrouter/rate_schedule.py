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

Gaps are taken between the server's own reset stamps (epoch ms, exact) when the caller passes them:
converted through two client clocks they carry milliseconds of jitter, and the divisor of 1.0 s and 1.03 s
is 0.03 s. Resets that fit no grid (a sliding window, say) have a divisor under `MIN_WINDOW_S`, taken as
unknown: then there is no pace, only the pause until each reset. No I/O, no clock: times are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WINDOW_S = 60.0  # a named reset further away than this is not a budget window we can learn from
GAP_TOLERANCE_S = 0.02  # reset stamps are whole milliseconds (and, without stamps, converted times)
MIN_WINDOW_S = 0.1  # a window estimated shorter than this means the resets follow no grid we can read
REMAINDER_SLACK = 0.95


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

    @property
    def period(self) -> float | None:
        """The window length in seconds, once two reset times a window or more apart were named."""
        if self._gaps_gcd is None or self._gaps_gcd < MIN_WINDOW_S:
            return None
        bound = max(REMAINDER_SLACK * self._longest_remainder, MIN_WINDOW_S)
        return self._gaps_gcd / max(1, math.floor(self._gaps_gcd / bound + 1e-9))

    @property
    def rate(self) -> float | None:
        """The server's budget per second (X-RateLimit-Limit over the window), once both are known."""
        period = self.period
        if period is None or self.budget is None:
            return None
        return self.budget / period

    def learn(self, reset_at: float, now: float, budget: int | None, stamp: float | None = None) -> None:
        """One 429 received at `now` named `reset_at` (monotonic), as the server stamped it `stamp` (epoch
        seconds; gaps are taken between stamps when given), maybe with its window's budget."""
        remainder = reset_at - now
        if 0 < remainder <= MAX_WINDOW_S:
            self._longest_remainder = max(self._longest_remainder, remainder)
        stamp = reset_at if stamp is None else stamp
        gap = stamp - self._latest_stamp
        if GAP_TOLERANCE_S < gap <= MAX_WINDOW_S:  # -inf before the first: no gap
            self._gaps_gcd = gap if self._gaps_gcd is None else approximate_gcd(self._gaps_gcd, gap)
        if stamp >= self._latest_stamp:
            self._latest_stamp, self.known_reset = stamp, reset_at
        if budget is not None and budget > 0:
            self.budget = budget

    def next_reset(self, now: float) -> float | None:
        """The budget's next reset after `now`: the last one named, or that plus whole windows; None if unknown."""
        if self.known_reset > now:
            return self.known_reset
        period = self.period
        if period is None or not math.isfinite(self.known_reset):
            return None
        windows = math.ceil((now - self.known_reset) / period)
        return self.known_reset + max(1, windows) * period
