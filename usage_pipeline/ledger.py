"""Record one UTC day of OpenRouter generations in the InfluxDB ledger, as a stream.

windows -> records -> batches: each analytics window's records are written here while the capture goes on
fetching the next ones on its own thread, so memory is bounded by a few windows, never by the day. Writes are
upserts (same identity overwrites), so a rerun of a day never adds a point; a failed batch raises and fails the
caller.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.influx.writes import WRITE_BATCH_SIZE
from usage_pipeline.openrouter.capture import CaptureReport, DayCapture
from usage_pipeline.openrouter.client import OpenRouterClient


@dataclass(frozen=True)
class DayRecording:
    """The capture report plus what reached InfluxDB."""

    capture: CaptureReport
    written: int
    refused: dict[str, str]  # generation id -> why InfluxDB cannot hold it exactly
    write_seconds: float
    elapsed_s: float

    @property
    def complete(self) -> bool:
        return (self.capture.complete and not self.refused
                and self.written == self.capture.records_fetched)

    def problems(self) -> str:
        """What kept the day from being complete, with the ids and reasons (empty when complete)."""
        c = self.capture
        shown = ", ".join(c.missing[:20]) + (" ..." if len(c.missing) > 20 else "")
        problems = [f"{len(c.missing)} generation(s) still missing after retries "
                    f"({shown}; reasons: {c.missing_reasons})" if c.missing else "",
                    f"{len(c.invalid)} record(s) invalid: {c.invalid[:5]}" if c.invalid else "",
                    f"{len(self.refused)} record(s) refused by InfluxDB: "
                    f"{dict(list(self.refused.items())[:5])}" if self.refused else "",
                    f"{self.written} of {c.records_fetched} fetched record(s) written"
                    if self.written != c.records_fetched and not self.refused else "",
                    f"{c.records_fetched + c.next_day_ids_skipped} of {c.ids_enumerated} enumerated id(s) fetched"
                    if not c.complete and not (c.missing or c.invalid) else ""]
        found = "; ".join(p for p in problems if p)
        if not found:
            return ""
        return f"day {c.day} is incomplete: {found}. Everything else was written; rerun the day to complete it."

    def summary(self) -> dict[str, Any]:
        c = self.capture
        return {
            "day": c.day,
            "enumerated": c.ids_enumerated,
            "fetched": c.records_fetched,
            "written": self.written,
            "refused_by_influxdb": len(self.refused),
            "duplicates_skipped": c.duplicate_ids_across_windows,
            "next_day_ids_skipped": c.next_day_ids_skipped,
            "missing": len(c.missing),
            "invalid": len(c.invalid),
            "windows": c.windows_queried,
            "windows_split": c.windows_split,
            "analytics_queries": c.analytics_queries,
            "count_queries": c.count_queries,
            "analytics_row_limit": c.row_limit,
            "expected_from_counts": c.expected_from_counts,
            "retries": c.retries,
            "throttled_429": c.throttled,
            "fetch_requests": c.fetch_requests,
            "hedged_requests": c.hedged,
            "records_per_second": round(c.records_per_second, 1),
            "peak_in_flight": c.peak_in_flight,
            "fetch_p50_ms": c.fetch_p50_ms,
            "fetch_p99_ms": c.fetch_p99_ms,
            "seconds": round(self.elapsed_s, 3),
            "influx_write_seconds": round(self.write_seconds, 3),
        }


def record_day(client: OpenRouterClient, store: InfluxStore, day: dt.date, *,
               batch_size: int = WRITE_BATCH_SIZE) -> DayRecording:
    """Capture `day` and upsert every record; the caller decides what an incomplete day means."""
    started = time.monotonic()
    capture = DayCapture(client, day)
    written = 0
    refused: dict[str, str] = {}
    write_seconds = 0.0
    for batch in capture.batches():
        t0 = time.monotonic()
        result = store.write_generations(batch, batch_size=batch_size)
        written += result.written
        refused.update(result.refused)
        write_seconds += time.monotonic() - t0
    return DayRecording(capture.report, written, refused, write_seconds, time.monotonic() - started)
