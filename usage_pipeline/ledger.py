"""Record one UTC day of OpenRouter generations in the InfluxDB ledger, as a stream.

windows -> records -> batches: records are written here as they arrive, while the capture goes on fetching
on its own thread, so memory is bounded by a few open windows, never by the day. This module joins the two
sides, which never import each other: the capture (`openrouter`) asks the writer (`influx.day_writer`) per
window which ids are stored whole already, and those are not fetched again unless `refresh` is asked for,
so a rerun pays only for what is missing. Writes are upserts at ranks kept in the writer's rank book, so no
two generations share a point and a rerun never adds one; a failed batch raises and fails the caller.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from usage_pipeline.influx.day_writer import DayWriter, DayWriteTotals
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.influx.writes import WRITE_BATCH_SIZE
from usage_pipeline.openrouter.capture import DayCapture
from usage_pipeline.openrouter.capture_types import CaptureReport
from usage_pipeline.openrouter.client import OpenRouterClient


@dataclass(frozen=True)
class DayRecording:
    """The capture report plus what reached InfluxDB."""

    capture: CaptureReport
    totals: DayWriteTotals
    refresh: bool
    elapsed_s: float

    @property
    def written(self) -> int:
        return self.totals.written

    @property
    def refused(self) -> dict[str, str]:
        """Generation id -> why InfluxDB cannot hold it exactly."""
        return self.totals.refused

    @property
    def write_seconds(self) -> float:
        return self.totals.write_seconds

    @property
    def complete(self) -> bool:
        """Every enumerated id is stored (fetched and written now, or reused) and nothing was refused."""
        return (self.capture.complete and not self.refused
                and self.written == self.capture.records_fetched)

    def problems(self) -> str:
        """What kept the day from being complete, with the ids and reasons (empty when complete)."""
        c = self.capture
        shown = ", ".join(c.missing[:20]) + (" ..." if len(c.missing) > 20 else "")
        accounted = c.records_fetched + c.records_reused + c.next_day_ids_skipped
        problems = [f"{len(c.missing)} generation(s) still missing after retries "
                    f"({shown}; reasons: {c.missing_reasons})" if c.missing else "",
                    f"{len(c.invalid)} record(s) invalid: {c.invalid[:5]}" if c.invalid else "",
                    f"{len(self.refused)} record(s) refused by InfluxDB: "
                    f"{dict(list(self.refused.items())[:5])}" if self.refused else "",
                    f"{self.written} of {c.records_fetched} fetched record(s) written"
                    if self.written != c.records_fetched and not self.refused else "",
                    f"{accounted} of {c.ids_enumerated} enumerated id(s) fetched or reused"
                    if not c.complete and not (c.missing or c.invalid) else ""]
        found = "; ".join(p for p in problems if p)
        if not found:
            return ""
        return f"day {c.day} is incomplete: {found}. Everything else was written; rerun the day to complete it."

    def summary(self) -> dict[str, Any]:
        c, t = self.capture, self.totals
        return {
            "day": c.day,
            "enumerated": c.ids_enumerated,
            "reused": c.records_reused,  # stored whole already: not fetched again
            "fetched": c.records_fetched,
            "written": self.written,
            "refresh": self.refresh,
            "refused_by_influxdb": len(self.refused),
            "stored_points_read": t.stored_points_read,
            "ranks_kept": t.ranks_kept,
            "stale_points_deleted": t.stale_deleted,
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
            "throttled_429_lone": c.throttled_lone,
            "account_pauses": c.account_pauses,
            "paused_seconds": c.paused_s,
            "learned_rps": c.learned_rps,
            "fetch_requests": c.fetch_requests,
            "hedged_requests": c.hedged,
            "twinned_requests": c.twinned,
            "batches": c.batches,
            "records_per_second": round(c.records_per_second, 1),
            "fetch_seconds": c.fetch_seconds,
            "peak_in_flight": c.peak_in_flight,
            "peak_open_windows": c.peak_open_windows,
            "fetch_p50_ms": c.fetch_p50_ms,
            "fetch_p99_ms": c.fetch_p99_ms,
            "seconds": round(self.elapsed_s, 3),
            "influx_write_seconds": round(t.write_seconds, 3),
            "influx_read_seconds": round(t.read_seconds, 3),
        }


def record_day(client: OpenRouterClient, store: InfluxStore, day: dt.date, *, refresh: bool = False,
               batch_size: int = WRITE_BATCH_SIZE) -> DayRecording:
    """Capture `day` and upsert every record not stored whole already (all of them with `refresh`); the
    caller decides what an incomplete day means."""
    started = time.monotonic()
    with DayWriter(store, refresh=refresh, batch_size=batch_size) as writer:
        capture = DayCapture(client, day, stored=writer)
        for batch in capture.batches():
            writer.write(batch)
    return DayRecording(capture.report, writer.totals, refresh, time.monotonic() - started)
