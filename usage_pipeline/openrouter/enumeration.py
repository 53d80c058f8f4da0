"""List one day's generation ids: count where the traffic is, then query windows that are never cut.

The analytics endpoint has no cursor: a result is cut at its row limit and flagged `truncated`. Hourly
request counts (one cheap query) place windows of equal expected size; inside 3-hour blocks holding an
hour bigger than one window, minute counts place them. A window that still comes back cut is split
(`WindowQueue`). Synchronous on purpose: analytics is paced at 64 requests/minute, so during a capture
this runs in a worker thread, a window or more ahead of the record fetches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Protocol

from usage_pipeline.openrouter import analytics_values
from usage_pipeline.openrouter import windows as plan_windows
from usage_pipeline.openrouter.client import ANALYTICS_MAX_ROWS, OpenRouterClient
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.transport import OpenRouterError
from usage_pipeline.openrouter.windows import Bucket, Window, WindowQueue

REFINE_BLOCK_HOURS = 3  # minute granularity is only served for windows of 3 hours or less

IdWindow = tuple[Window, dict[str, Any]]  # a window and its ids -> the API key's label, as answered


class EnumerationReport(Protocol):
    count_queries: int
    windows_queried: int
    windows_split: int
    row_limit: int
    duplicate_ids_across_windows: int


class DayEnumeration:
    """The count buckets and id windows of one day; counters go to `report`."""

    def __init__(self, client: OpenRouterClient, day: dt.date, report: EnumerationReport) -> None:
        self.client = client
        self.day = day
        self.report = report

    def _counts(self, start: dt.datetime, end: dt.datetime, granularity: str, width: dt.timedelta) -> list[Bucket]:
        result = self.client.analytics(metrics=["request_count"], granularity=granularity, start=start, end=end,
                                       limit=1000)
        if result.truncated:
            raise OpenRouterError(f"{granularity} request_count for {start.isoformat()}..{end.isoformat()} "
                                  "came back truncated")
        buckets = []
        for row in result.rows:
            try:
                moment = analytics_values.bucket_start(row, granularity)
                requests = analytics_values.count(row.get("request_count")) or 0
            except ValueError as exc:
                raise OpenRouterError(f"{granularity} request_count row: {exc}") from None
            if moment is None:
                raise OpenRouterError(f"{granularity} request_count row without a time bucket: {sorted(row)}")
            if start <= moment < end:  # a server with an inclusive end adds the next bucket's first instant
                buckets.append(Bucket(moment, moment + width, requests))
        return sorted(buckets, key=lambda b: b.start)

    def count_buckets(self) -> list[Bucket]:
        """Hourly counts for the day, refined to minutes inside the 3-hour blocks that hold an hour bigger
        than one window: there windows are minutes wide and hourly interpolation misses bursts. Quiet days
        spend one query here; only heavy hours pay for detail."""
        start, end = day_bounds(self.day)
        hourly = self._counts(start, end, "hour", dt.timedelta(hours=1))
        block = dt.timedelta(hours=REFINE_BLOCK_HOURS)
        dense_blocks = sorted({start + block * ((b.start - start) // block) for b in hourly
                               if b.count > plan_windows.FILL * ANALYTICS_MAX_ROWS})
        if not dense_blocks:
            return hourly
        refined = [b for b in hourly if not any(d <= b.start < d + block for d in dense_blocks)]
        for block_start in dense_blocks:
            refined += self._counts(block_start, block_start + block, "minute", dt.timedelta(minutes=1))
            self.report.count_queries += 1
        return sorted(refined, key=lambda b: b.start)

    def windows(self, buckets: list[Bucket]) -> Iterator[IdWindow]:
        """Each final (untruncated) window in time order, with the ids not already in the previous one.

        Adjacent windows share an edge; a server that treats the end as inclusive answers an id at the
        edge in both, and it is one generation.
        """
        start, end = day_bounds(self.day)
        queue = WindowQueue(buckets, start, end, ANALYTICS_MAX_ROWS)
        previous: set[str] = set()
        while (window := queue.next()) is not None:
            result = self.client.analytics(
                metrics=["request_count"], dimensions=["generation_id", "api_key_id"],
                start=window.start, end=window.end, limit=queue.row_limit)
            if result.truncated:
                queue.truncated(window, result.row_count)
                self.report.windows_split = queue.splits
                self.report.row_limit = queue.row_limit
                continue
            self.report.windows_queried += 1
            ids: dict[str, Any] = {}
            for row in result.rows:
                gen_id = row.get("generation_id")
                if not isinstance(gen_id, str) or not gen_id:
                    raise OpenRouterError(f"analytics row without a generation_id string in {window}: "
                                          f"{sorted(row)}")
                ids[gen_id] = row.get("api_key_id")  # the record refuses a label that is not a string
            repeated = previous.intersection(ids)
            self.report.duplicate_ids_across_windows += len(repeated)
            previous = set(ids)
            yield window, {i: k for i, k in ids.items() if i not in repeated}
