"""Capture every generation of one UTC day, at the pace the server allows, as a stream of batches.

Three stages overlap: a worker thread lists the next window's ids (`DayEnumeration`) while records are
fetched, hundreds in flight (`fetching.DayFetch`, paced by one shared `AdaptiveLimit`), while the caller
writes the batches already handed over. Records stream out as they arrive (batches by size or age), so a
slow, hung or 404ing record holds back nothing but itself; at most `OPEN_WINDOWS` windows are open at once,
so memory is bounded by them, never by the day.

A ledger that already holds part of the day passes itself as `stored` (`StoredRecords`): each window's ids
it holds whole are not fetched again (they count as reused), and it is told when a window is done, so it can
keep per-window state (the ranks that keep points apart) only while it is needed.

Nothing is dropped silently: ids whose record stays 404 or keeps failing are listed in `report.missing`,
records that cannot be parsed in `report.invalid`, and a window still truncated at millisecond width raises.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Generator
from typing import Any

from usage_pipeline.openrouter.capture_types import CaptureReport, CaptureSide, StoredRecords
from usage_pipeline.openrouter.client import OpenRouterClient
from usage_pipeline.openrouter.day import EDGE, check_capturable, day_bounds
from usage_pipeline.openrouter.enumeration import DayEnumeration
from usage_pipeline.openrouter.fetching import DayFetch
from usage_pipeline.openrouter.gc_freeze import long_lived_frozen
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration
from usage_pipeline.openrouter.handover import WindowClosed
from usage_pipeline.openrouter.records import RecordRetries
from usage_pipeline.openrouter.windows import Bucket, WindowTooDense

__all__ = ["CaptureReport", "DayCapture", "StoredRecords", "WindowTooDense", "stream_batches"]


class DayCapture:
    """Iterate `batches()` for the day's generations; read `report` afterwards."""

    def __init__(self, client: OpenRouterClient, day: dt.date, *, now: dt.datetime | None = None,
                 retries: RecordRetries | None = None, stored: StoredRecords | None = None) -> None:
        check_capturable(day, now)
        self.client = client
        self.day = day
        self.stored = stored
        self.report = CaptureReport(day=day.isoformat())
        self.enumeration = DayEnumeration(client, day, self.report)
        self.retries = retries or RecordRetries(not_found=client.not_found_retries)
        self._start, self._end = day_bounds(day)

    def count_buckets(self) -> list[Bucket]:
        return self.enumeration.count_buckets()

    def batches(self) -> Generator[list[Generation], None, None]:
        return stream_batches(self)

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


def stream_batches(side: CaptureSide) -> Generator[list[Generation], None, None]:
    """The records of `side` (a day's capture, or the push drain's ids) as batches, fetched on a thread of
    their own while the caller writes: the caller's side of `fetching.DayFetch`."""
    started = time.monotonic()
    client, report = side.client, side.report
    queries_before, retries_before = client.analytics_queries, client.retries
    handed: queue.Queue[Any] = queue.Queue()
    runner = DayFetch(side, handed.put)
    thread = threading.Thread(target=runner.run, name=f"capture-{side.day}", daemon=True)
    with long_lived_frozen():  # full collections stall the fetching thread; see gc_freeze
        thread.start()
        try:
            while True:
                item = handed.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, WindowClosed):
                    if side.stored is not None:
                        side.stored.window_closed(item.window)
                    continue
                batch, written = item
                yield batch
                written()
        finally:
            runner.stop()
            thread.join()
            report.analytics_queries = client.analytics_queries - queries_before
            report.retries += client.retries - retries_before
            report.elapsed_s = round(time.monotonic() - started, 3)
