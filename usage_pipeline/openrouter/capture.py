"""Capture every generation of one UTC day: enumerate ids window by window, fetch each record.

A day is streamed as one batch per analytics window, so memory is bounded by the window size (at most
10,000 generations), never by the day. Nothing is dropped silently: ids whose record stays 404 are
listed in `report.missing`, records that cannot be parsed in `report.invalid`, and a window still
truncated at millisecond width raises.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from usage_pipeline.openrouter import windows as plan_windows
from usage_pipeline.openrouter.client import ANALYTICS_MAX_ROWS, GENERATION_ID_WINDOW, OpenRouterClient
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration, parse_created_at
from usage_pipeline.openrouter.transport import OpenRouterAuthError, OpenRouterError
from usage_pipeline.openrouter.windows import Bucket, Window

UTC = dt.timezone.utc


REFINE_BLOCK_HOURS = 3  # minute granularity is only served for windows of 3 hours or less


class DayOutOfRange(ValueError):
    """The day cannot be captured: not complete yet, or older than the 31-day generation_id window."""


class WindowTooDense(OpenRouterError):
    """A window at the minimum width is still truncated: capturing it exactly is impossible."""


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=UTC)
    return start, start + dt.timedelta(days=1)


def check_capturable(day: dt.date, now: dt.datetime | None = None) -> None:
    """Fail fast, with the reason, for days the generation_id dimension cannot enumerate."""
    now = now or dt.datetime.now(UTC)
    start, end = day_bounds(day)
    if end > now:
        raise DayOutOfRange(f"day {day} is not complete yet (it ends {end.isoformat()}); only completed UTC days are captured")
    if start < now - GENERATION_ID_WINDOW:
        oldest = (now - GENERATION_ID_WINDOW).date() + dt.timedelta(days=1)
        raise DayOutOfRange(
            f"day {day} is older than OpenRouter's 31-day window for the analytics generation_id dimension; "
            f"its generations can no longer be enumerated (oldest capturable day now: {oldest})")


@dataclass
class CaptureReport:
    """What a capture did, for the run's metadata and for the checks."""

    day: str
    expected_from_counts: int = 0
    count_queries: int = 1  # the hourly request_count, plus minute counts for dense 3-hour blocks
    windows_queried: int = 0
    windows_split: int = 0
    analytics_queries: int = 0
    row_limit: int = ANALYTICS_MAX_ROWS
    ids_enumerated: int = 0
    records_fetched: int = 0
    duplicate_ids_across_windows: int = 0
    missing: list[str] = field(default_factory=list)
    missing_reasons: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    retries: int = 0
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.missing and not self.invalid and self.records_fetched == self.ids_enumerated

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bucket_start(row: dict[str, Any], granularity: str) -> dt.datetime | None:
    for key in (f"date__{granularity}", f"created_at__{granularity}"):
        if row.get(key):
            return parse_created_at(str(row[key]))
    return None


class DayCapture:
    """Iterate `batches()` for the day's generations; read `report` afterwards."""

    def __init__(self, client: OpenRouterClient, day: dt.date, *, now: dt.datetime | None = None) -> None:
        check_capturable(day, now)
        self.client = client
        self.day = day
        self.report = CaptureReport(day=day.isoformat())

    def _counts(self, start: dt.datetime, end: dt.datetime, granularity: str, width: dt.timedelta) -> list[Bucket]:
        result = self.client.analytics(metrics=["request_count"], granularity=granularity, start=start, end=end,
                                       limit=1000)
        if result.truncated:
            raise OpenRouterError(f"{granularity} request_count for {start.isoformat()}..{end.isoformat()} came back truncated")
        buckets = []
        for row in result.rows:
            moment = _bucket_start(row, granularity)
            if moment is None:
                raise OpenRouterError(f"{granularity} request_count row without a time bucket: {sorted(row)}")
            buckets.append(Bucket(moment, moment + width, int(row.get("request_count") or 0)))
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

    def _enumerate(self, buckets: list[Bucket]) -> Iterator[tuple[Window, dict[str, str | None]]]:
        """Yield each final (untruncated) window with its ids -> api key label, splitting as needed."""
        start, end = day_bounds(self.day)
        limit = ANALYTICS_MAX_ROWS
        queue = deque(plan_windows.plan(buckets, start, end, limit))
        while queue:
            window = queue.popleft()
            result = self.client.analytics(
                metrics=["request_count"], dimensions=["generation_id", "api_key_id"],
                start=window.start, end=window.end, limit=limit)
            if not result.truncated:
                self.report.windows_queried += 1
                ids: dict[str, str | None] = {}
                for row in result.rows:
                    gen_id = row.get("generation_id")
                    if not gen_id:
                        raise OpenRouterError(f"analytics row without generation_id in {window}: {sorted(row)}")
                    key = row.get("api_key_id")
                    ids[str(gen_id)] = None if key in (None, "") else str(key)
                yield window, ids
                continue
            # Cut: the server may cap below the limit we asked for; learn the cap from what came back.
            if 0 < result.row_count < limit:
                limit = result.row_count
                self.report.row_limit = limit
            if window.width < 2 * plan_windows.MIN_WIDTH:
                raise WindowTooDense(
                    f"{window.start.isoformat()}..{window.end.isoformat()} holds more than {limit} generations "
                    "in the narrowest window the analytics API takes; it cannot be enumerated exactly")
            expected = max(window.expected, result.row_count + 1)
            parts = max(2, math.ceil(expected / (plan_windows.FILL * limit)))
            self.report.windows_split += 1
            pieces = plan_windows.split(buckets, window.start, window.end, parts)
            # Re-plan what is still queued against the learned cap, then take the pieces next.
            rest = [p for w in queue for p in plan_windows.split(
                buckets, w.start, w.end, math.ceil(w.expected / (plan_windows.FILL * limit)) or 1)]
            queue = deque(pieces + rest)

    def _fetch(self, gen_id: str) -> tuple[str, dict[str, Any] | None, str]:
        """One record; a transient failure that outlasts the retries is reported for this id only."""
        try:
            return gen_id, self.client.generation(gen_id), "still 404 after retries"
        except OpenRouterAuthError:
            raise
        except OpenRouterError as exc:
            return gen_id, None, str(exc)

    def batches(self) -> Iterator[list[Generation]]:
        started = time.monotonic()
        queries_before = self.client.analytics_queries
        retries_before = self.client.retries
        start, end = day_bounds(self.day)
        try:
            buckets = self.count_buckets()
            self.report.expected_from_counts = sum(b.count for b in buckets)
            previous: set[str] = set()
            with ThreadPoolExecutor(max_workers=self.client.settings.concurrency,
                                    thread_name_prefix="openrouter-generation") as pool:
                for _window, ids in self._enumerate(buckets):
                    # Windows are half-open and adjacent; an id repeated at a shared edge is one generation.
                    repeated = previous.intersection(ids)
                    self.report.duplicate_ids_across_windows += len(repeated)
                    fresh = [i for i in ids if i not in repeated]
                    self.report.ids_enumerated += len(fresh)
                    batch: list[Generation] = []
                    for gen_id, data, reason in pool.map(self._fetch, fresh):
                        if data is None:
                            self.report.missing.append(gen_id)
                            self.report.missing_reasons.setdefault(reason, 0)
                            self.report.missing_reasons[reason] += 1
                            continue
                        try:
                            record = Generation.from_api(data, api_key_id=ids[gen_id])
                        except InvalidGeneration as exc:
                            self.report.invalid.append(str(exc))
                            continue
                        if record.id != gen_id or not start <= record.created_at < end:
                            self.report.invalid.append(
                                f"generation {gen_id}: record id {record.id!r} created_at "
                                f"{record.created_at.isoformat()} does not belong to {self.day}")
                            continue
                        batch.append(record)
                    self.report.records_fetched += len(batch)
                    previous = set(ids)
                    if batch:
                        yield batch
        finally:
            self.report.analytics_queries = self.client.analytics_queries - queries_before
            self.report.retries = self.client.retries - retries_before
            self.report.elapsed_s = round(time.monotonic() - started, 3)
