"""Plan the analytics time windows that enumerate a day, from the day's hourly request counts.

The analytics endpoint has no cursor: a result is cut at its row limit and flagged `truncated`. Full
pagination means querying windows small enough never to be cut. Hourly counts (one cheap query) tell
where the traffic is, so windows can be cut at equal expected counts instead of halving blindly:
ceil(N / target) windows for N generations, each with head-room for uneven traffic inside an hour.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

MIN_WIDTH = dt.timedelta(milliseconds=1)  # the time_range precision we send
FILL = 0.9  # plan windows to at most 90% of the row limit


@dataclass(frozen=True)
class Bucket:
    """A span of time and how many generations the API counted in it."""

    start: dt.datetime
    end: dt.datetime
    count: int


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    expected: float  # estimated from the buckets; only a plan, the query result is the truth

    @property
    def width(self) -> dt.timedelta:
        return self.end - self.start


def _floor_ms(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def expected_between(buckets: Sequence[Bucket], start: dt.datetime, end: dt.datetime) -> float:
    """Generations expected in [start, end), assuming even spread inside each bucket."""
    total = 0.0
    for b in buckets:
        lo, hi = max(b.start, start), min(b.end, end)
        if hi > lo and b.count:
            total += b.count * (hi - lo) / (b.end - b.start)
    return total


def _time_at(buckets: Sequence[Bucket], start: dt.datetime, target: float) -> dt.datetime:
    """The moment after `start` by which `target` generations are expected."""
    acc = 0.0
    for b in buckets:
        if b.end <= start or not b.count:
            continue
        lo = max(b.start, start)
        portion = b.count * (b.end - lo) / (b.end - b.start)
        if acc + portion >= target:
            return lo + (b.end - b.start) * ((target - acc) / b.count)
        acc += portion
    return buckets[-1].end


def split(buckets: Sequence[Bucket], start: dt.datetime, end: dt.datetime, parts: int) -> list[Window]:
    """Cut [start, end) into `parts` windows of equal expected count (equal width where nothing is known).

    Cuts are floored to whole milliseconds; windows narrower than MIN_WIDTH are merged away. Any window
    at least 2 x MIN_WIDTH wide is cut at least once when parts > 1.
    """
    parts = max(1, parts)
    expected = expected_between(buckets, start, end)
    cuts = [start]
    for k in range(1, parts):
        if expected > 0:
            moment = _time_at(buckets, start, expected * k / parts)
        else:
            moment = start + (end - start) * k / parts
        moment = _floor_ms(moment)
        if cuts[-1] + MIN_WIDTH <= moment <= end - MIN_WIDTH:
            cuts.append(moment)
    if parts > 1 and len(cuts) == 1 and end - start >= 2 * MIN_WIDTH:
        # Every interpolated cut fell on the edge (all the expected traffic in the first millisecond):
        # halve by width, so a split always makes progress.
        cuts.append(_floor_ms(start + (end - start) / 2))
    cuts.append(end)
    return [Window(a, b, expected_between(buckets, a, b)) for a, b in zip(cuts, cuts[1:], strict=False)]


def plan(buckets: Sequence[Bucket], start: dt.datetime, end: dt.datetime, row_limit: int) -> list[Window]:
    """The fewest windows whose expected counts each fit FILL x row_limit."""
    expected = expected_between(buckets, start, end)
    return split(buckets, start, end, math.ceil(expected / (FILL * row_limit)) if expected else 1)


class WindowTooDense(ValueError):
    """A window at the minimum width is still truncated: capturing it exactly is impossible."""


class WindowQueue:
    """The windows still to query for [start, end), in time order, re-planned when one comes back cut.

    No I/O: the caller queries `next()` and reports a cut window with `truncated()`. The server may cap
    rows below the limit asked for, so the cap is learned from a truncated answer's row count (never from
    a full, untruncated one) and every queued window is re-planned against it.
    """

    def __init__(self, buckets: Sequence[Bucket], start: dt.datetime, end: dt.datetime, row_limit: int) -> None:
        self.buckets = list(buckets)
        self.row_limit = row_limit
        self.splits = 0
        self._queue: deque[Window] = deque(plan(self.buckets, start, end, row_limit))

    def __len__(self) -> int:
        return len(self._queue)

    def next(self) -> Window | None:
        """The earliest window not yet queried, or None when the range is covered."""
        return self._queue.popleft() if self._queue else None

    def truncated(self, window: Window, row_count: int) -> None:
        """`window` came back cut after `row_count` rows: query its pieces next, then the re-planned rest."""
        if 0 < row_count < self.row_limit:
            self.row_limit = row_count
        if window.width < 2 * MIN_WIDTH:
            raise WindowTooDense(
                f"{window.start.isoformat()}..{window.end.isoformat()} holds more than {self.row_limit} generations "
                "in the narrowest window the analytics API takes; it cannot be enumerated exactly")
        expected = max(window.expected, row_count + 1)
        parts = max(2, math.ceil(expected / (FILL * self.row_limit)))
        self.splits += 1
        pieces = split(self.buckets, window.start, window.end, parts)
        rest = [piece for queued in self._queue for piece in split(
            self.buckets, queued.start, queued.end, math.ceil(queued.expected / (FILL * self.row_limit)) or 1)]
        self._queue = deque(pieces + rest)
