"""List one day's generation ids. Analytics has no cursor (a result is cut at its row limit), so the day's request
counts plan the fewest windows that should never be cut, at equal expected counts with head-room for uneven
traffic; one still cut is split. The planning (`plan`, `split`, `WindowPlan`) is pure; `day_windows` queries."""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter import analytics_values
from usage_pipeline.openrouter.analytics_values import ANALYTICS_MAX_ROWS, read_as
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.source import OpenRouterSource

MIN_WIDTH = dt.timedelta(milliseconds=1)  # the time_range precision we send
FILL = 0.9  # plan windows to at most 90% of the row limit
REFINE_BLOCK_HOURS = 3  # minute granularity is only served for windows of 3 hours or less


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
    """Cut [start, end) into `parts` windows of equal expected count (equal width where nothing is known), at
    whole milliseconds; a window at least 2 x MIN_WIDTH wide is always cut at least once when parts > 1."""
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
        # all the expected traffic in the first millisecond: halve by width, so a split always makes progress
        cuts.append(_floor_ms(start + (end - start) / 2))
    cuts.append(end)
    return [Window(a, b, expected_between(buckets, a, b)) for a, b in zip(cuts, cuts[1:], strict=False)]


def plan(buckets: Sequence[Bucket], start: dt.datetime, end: dt.datetime, row_limit: int) -> list[Window]:
    """The fewest windows whose expected counts each fit FILL x row_limit."""
    expected = expected_between(buckets, start, end)
    return split(buckets, start, end, math.ceil(expected / (FILL * row_limit)) if expected else 1)


class WindowTooDense(ValueError):
    """A window at the minimum width is still truncated: capturing it exactly is impossible."""


class WindowPlan:
    """The windows still to query for [start, end), in time order, re-planned when one comes back cut. The server
    may cap rows below the limit asked for, so a truncated answer's row count lowers the limit planned for."""

    def __init__(self, buckets: Sequence[Bucket], start: dt.datetime, end: dt.datetime, row_limit: int) -> None:
        self.buckets = list(buckets)
        self.row_limit = row_limit
        self.splits = 0
        self._todo: deque[Window] = deque(plan(self.buckets, start, end, row_limit))

    def __len__(self) -> int:
        return len(self._todo)

    def next(self) -> Window | None:
        return self._todo.popleft() if self._todo else None

    def truncated(self, window: Window, row_count: int) -> None:
        """`window` came back cut after `row_count` rows: query its pieces next, then the re-planned rest."""
        if 0 < row_count < self.row_limit:
            self.row_limit = row_count
        if window.end - window.start < 2 * MIN_WIDTH:
            raise WindowTooDense(
                f"{window.start.isoformat()}..{window.end.isoformat()} holds more than {self.row_limit} generations "
                "in the narrowest window the analytics API takes; it cannot be enumerated exactly")
        expected = max(window.expected, row_count + 1)
        parts = max(2, math.ceil(expected / (FILL * self.row_limit)))
        self.splits += 1
        pieces = split(self.buckets, window.start, window.end, parts)
        rest = [piece for planned in self._todo for piece in split(
            self.buckets, planned.start, planned.end, math.ceil(planned.expected / (FILL * self.row_limit)) or 1)]
        self._todo = deque(pieces + rest)


@dataclass
class Listing:
    """What enumerating a day took, for the run's metadata."""

    expected_from_counts: int = 0
    count_queries: int = 1  # the hourly request_count, plus minute counts for dense 3-hour blocks
    windows_queried: int = 0
    windows_split: int = 0
    row_limit: int = ANALYTICS_MAX_ROWS
    ids_enumerated: int = 0
    duplicate_ids_across_windows: int = 0


@dataclass(frozen=True)
class IdWindow:
    """A final (untruncated) window and its ids -> the API key's label, as analytics answered."""

    window: Window
    ids: dict[str, Any]


async def _counts(source: OpenRouterSource, start: dt.datetime, end: dt.datetime, granularity: str,
                  width: dt.timedelta) -> list[Bucket]:
    result = await source.analytics(metrics=["request_count"], granularity=granularity, start=start, end=end,
                                    limit=1000)
    if result.truncated:
        raise OpenRouterError(f"{granularity} request_count for {start.isoformat()}..{end.isoformat()} "
                              "came back truncated")
    buckets = []
    what = f"{granularity} request_count row: "
    for row in result.rows:
        moment = read_as(OpenRouterError, what, analytics_values.bucket_start, row, granularity)
        requests = read_as(OpenRouterError, what, analytics_values.count, row.get("request_count")) or 0
        if moment is None:
            raise OpenRouterError(f"{granularity} request_count row without a time bucket: {sorted(row)}")
        if start <= moment < end:  # a server with an inclusive end adds the next bucket's first instant
            buckets.append(Bucket(moment, moment + width, requests))
    return sorted(buckets, key=lambda b: b.start)


async def count_buckets(source: OpenRouterSource, day: dt.date, listing: Listing) -> list[Bucket]:
    """Hourly counts for the day, refined to minutes in the 3-hour blocks holding an hour bigger than one
    window, where hourly interpolation would miss bursts: only heavy hours pay for detail."""
    start, end = day_bounds(day)
    hourly = await _counts(source, start, end, "hour", dt.timedelta(hours=1))
    block = dt.timedelta(hours=REFINE_BLOCK_HOURS)
    dense_blocks = sorted({start + block * ((b.start - start) // block) for b in hourly
                           if b.count > FILL * ANALYTICS_MAX_ROWS})
    refined = [b for b in hourly if not any(d <= b.start < d + block for d in dense_blocks)]
    for block_start in dense_blocks:
        refined += await _counts(source, block_start, block_start + block, "minute", dt.timedelta(minutes=1))
        listing.count_queries += 1
    listing.expected_from_counts = sum(b.count for b in refined)
    return sorted(refined, key=lambda b: b.start)


async def day_windows(source: OpenRouterSource, day: dt.date, listing: Listing) -> AsyncIterator[IdWindow]:
    """Each final window of the day in time order, with the ids not already in the previous one (a server
    whose end is inclusive answers an id on the edge of adjacent windows in both)."""
    start, end = day_bounds(day)
    windows = WindowPlan(await count_buckets(source, day, listing), start, end, ANALYTICS_MAX_ROWS)
    previous: set[str] = set()
    while (window := windows.next()) is not None:
        result = await source.analytics(metrics=["request_count"], dimensions=["generation_id", "api_key_id"],
                                        start=window.start, end=window.end, limit=windows.row_limit)
        if result.truncated:
            windows.truncated(window, result.row_count)
            listing.windows_split, listing.row_limit = windows.splits, windows.row_limit
            continue
        listing.windows_queried += 1
        ids: dict[str, Any] = {}
        for row in result.rows:
            gen_id = row.get("generation_id")
            if not isinstance(gen_id, str) or not gen_id:
                raise OpenRouterError(f"analytics row without a generation_id string in {window}: {sorted(row)}")
            ids[gen_id] = row.get("api_key_id")  # the record refuses a label that is not a string
        fresh = {i: k for i, k in ids.items() if i not in previous}
        listing.duplicate_ids_across_windows += len(ids) - len(fresh)
        listing.ids_enumerated += len(fresh)
        previous = set(ids)
        yield IdWindow(window, fresh)
