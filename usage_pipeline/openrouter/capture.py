"""Capture every generation of one UTC day, at the pace the server allows, as a stream of batches.

Three stages overlap: a worker thread lists the next window's ids (`DayEnumeration`) while this window's
records are fetched, hundreds in flight (`RecordFetcher`, paced by one shared `AdaptiveLimit`), while the
caller writes the previous window. No head-of-line blocking: a slow or hung record holds only its own
window's hand-over, never the fetches behind it; at most `OPEN_WINDOWS` windows are open at once, so
memory is bounded by them, never by the day. A window is handed over whole, because the ledger ranks
generations that share a microsecond within one batch.

Nothing is dropped silently: ids whose record stays 404 or keeps failing are listed in `report.missing`,
records that cannot be parsed in `report.invalid`, and a window still truncated at millisecond width raises.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any

from usage_pipeline.openrouter.client import ANALYTICS_MAX_ROWS, OpenRouterClient
from usage_pipeline.openrouter.day import EDGE, check_capturable, day_bounds
from usage_pipeline.openrouter.enumeration import DayEnumeration
from usage_pipeline.openrouter.fetching import DayFetch
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration
from usage_pipeline.openrouter.records import RecordRetries
from usage_pipeline.openrouter.windows import Bucket, WindowTooDense

__all__ = ["CaptureReport", "DayCapture", "WindowTooDense"]


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
    next_day_ids_skipped: int = 0  # answered by a server whose time_range.end is inclusive
    missing: list[str] = field(default_factory=list)
    missing_reasons: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    retries: int = 0
    throttled: int = 0  # 429s met by record fetches
    hedged: int = 0  # slow record requests raced by a second one
    fetch_requests: int = 0
    peak_in_flight: int = 0
    final_limit: float = 0.0
    fetch_p50_ms: float = 0.0
    fetch_p99_ms: float = 0.0
    fetch_seconds: float = 0.0  # from the first record request to the last answer
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return (not self.missing and not self.invalid
                and self.records_fetched + self.next_day_ids_skipped == self.ids_enumerated)

    @property
    def records_per_second(self) -> float:
        return self.records_fetched / self.fetch_seconds if self.fetch_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

class DayCapture:
    """Iterate `batches()` for the day's generations; read `report` afterwards."""

    def __init__(self, client: OpenRouterClient, day: dt.date, *, now: dt.datetime | None = None,
                 retries: RecordRetries | None = None) -> None:
        check_capturable(day, now)
        self.client = client
        self.day = day
        self.report = CaptureReport(day=day.isoformat())
        self.enumeration = DayEnumeration(client, day, self.report)
        self.retries = retries or RecordRetries(not_found=client.not_found_retries)
        self._start, self._end = day_bounds(day)

    def count_buckets(self) -> list[Bucket]:
        return self.enumeration.count_buckets()

    # -- the caller's side: a thread runs the fetching, batches come back through a queue --

    def batches(self) -> Generator[list[Generation], None, None]:
        started = time.monotonic()
        queries_before, retries_before = self.client.analytics_queries, self.client.retries
        handed: queue.Queue[Any] = queue.Queue()
        runner = DayFetch(self, handed.put)
        thread = threading.Thread(target=runner.run, name=f"capture-{self.day}", daemon=True)
        thread.start()
        try:
            while True:
                item = handed.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                batch, written = item
                yield batch
                written()
        finally:
            runner.stop()
            thread.join()
            self.report.analytics_queries = self.client.analytics_queries - queries_before
            self.report.retries += self.client.retries - retries_before
            self.report.elapsed_s = round(time.monotonic() - started, 3)

    def accept(self, gen_id: str, api_key: Any, data: dict[str, Any]) -> Generation | None:
        """The record of `gen_id` (its API key label as analytics answered it), or None after noting why it
        is not one of this day's."""
        try:
            record = Generation.from_api(data, api_key=api_key)
        except InvalidGeneration as exc:
            self.report.invalid.append(str(exc))
            return None
        if record.id == gen_id and self._end <= record.created_at < self._end + EDGE:
            self.report.next_day_ids_skipped += 1  # the next day's, answered at an inclusive edge
            return None
        if record.id != gen_id or not self._start <= record.created_at < self._end:
            self.report.invalid.append(f"generation {gen_id}: record id {record.id!r} created_at "
                                       f"{record.created_at.isoformat()} does not belong to {self.day}")
            return None
        return record

    def missing(self, gen_id: str, reason: str) -> None:
        self.report.missing.append(gen_id)
        self.report.missing_reasons[reason] = self.report.missing_reasons.get(reason, 0) + 1
