"""Record OpenRouter generations in the InfluxDB ledger: a day, window by window, or any set of ids.

One event loop, three stages as tasks: window k+1 is listed (`enumeration.day_windows`) while window k is
fetched (`fetch.RecordFetcher`) and window k-1 is written (`upserts.LedgerDatabase`). The unit is a window
(at most 10,000 ids): its stored points are read, the ids stored whole are reused (not fetched again unless
`refresh`), the rest are fetched whole, then upserted at the ranks `ranks.place` gives. At most
`OPEN_WINDOWS` windows are open, so memory is bounded by them, never by the day. The push drain calls the
same engine with its ids (`Ledger.record`).

Follow one day's records: `record_day` -> `capture_day` -> `day_windows` (ids) -> `Ledger.window` ->
`RecordFetcher.fetch_records` (records) -> `LedgerDatabase.upsert` (points).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvloop

from usage_pipeline.influx.points import Bodies, microseconds_since_epoch
from usage_pipeline.influx.ranks import StoredPoint
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.upserts import LedgerDatabase, Upserted
from usage_pipeline.openrouter.day import EDGE, check_capturable, day_bounds
from usage_pipeline.openrouter.enumeration import IdWindow, Listing, day_windows
from usage_pipeline.openrouter.fetch import Fetched, RecordFetcher
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.records import RecordRetries
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import ANALYTICS_RPM, OpenRouterSource

OPEN_WINDOWS = 3  # windows being read, fetched or written at once; a fourth may be listed meanwhile


@dataclass
class Recorded:
    """What became of a set of ids: reused, fetched, written, and every id not stored, with why."""

    reused: int = 0  # stored whole already: not fetched again
    fetched: int = 0
    written: int = 0
    kept: int = 0  # rewritten onto the point they already had
    stale_deleted: int = 0
    stored_points_read: int = 0
    next_day_ids_skipped: int = 0  # answered by a server whose time_range.end is inclusive
    missing: dict[str, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # by InfluxDB, or by line protocol

    def add(self, other: Recorded) -> None:
        for name in ("reused", "fetched", "written", "kept", "stale_deleted", "stored_points_read",
                     "next_day_ids_skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("missing", "invalid", "refused"):
            getattr(self, name).update(getattr(other, name))

    def take(self, fetched: Fetched, upserted: Upserted) -> None:
        self.missing.update(fetched.missing)
        self.invalid.update(fetched.invalid)
        self.written += upserted.written
        self.kept += upserted.kept
        self.stale_deleted += upserted.stale_deleted
        self.refused.update(upserted.refused)


def is_complete(points: Sequence[StoredPoint], api_key: Any) -> bool:
    """An id is stored whole when exactly one point carries it (a duplicate, which no correct run leaves, is
    refetched and repaired) and its `api_key` equals the label analytics answers now (a key relabelled
    since is fetched and rewritten). Every point the ledger writes has the id, model and a time in the day."""
    return len(points) == 1 and points[0].api_key == api_key


class Ledger:
    """The engine: ids -> records -> points, over one source and one database, on one event loop."""

    def __init__(self, source: OpenRouterSource, database: LedgerDatabase, *, refresh: bool = False,
                 retries: RecordRetries | None = None) -> None:
        self.fetcher = RecordFetcher(source, retries, seed=source.settings.base_url)
        self.database = database
        self.refresh = refresh

    async def window(self, window: IdWindow, day: dt.date) -> Recorded:
        """One enumerated window: reuse what is stored whole, fetch the rest whole, then upsert it."""
        start, end = window.window.start, window.window.end
        stored = await self.database.stored(microseconds_since_epoch(start) * 1000,
                                            microseconds_since_epoch(end) * 1000)
        by_id: dict[str, list[StoredPoint]] = {}
        for point in stored:
            by_id.setdefault(point.generation_id, []).append(point)
        todo = {gen_id: key for gen_id, key in window.ids.items()
                if self.refresh or not is_complete(by_id.get(gen_id, []), key)}
        done = Recorded(reused=len(window.ids) - len(todo), stored_points_read=len(stored))
        bodies = Bodies()  # each point made as its record arrives: no second of Point's work at the write
        fetched = await self.fetcher.fetch_records(todo, bodies.add)
        day_start, day_end = day_bounds(day)
        records = []
        for record in fetched.records:
            if day_end <= record.created_at < day_end + EDGE:
                done.next_day_ids_skipped += 1  # the next day's, answered at an inclusive edge
            elif not day_start <= record.created_at < day_end:
                fetched.invalid[record.id] = (f"generation {record.id}: created_at {record.created_at.isoformat()} "
                                              f"does not belong to {day}")
            else:
                records.append(record)
        strays = [r for r in records if not start <= r.created_at < end]
        if strays:  # analytics listed it in this window, its record says another time: rank it there too
            stored = stored + await self._stored_over(strays)
        done.fetched = len(records)
        done.take(fetched, await self.database.upsert(records, stored, bodies))
        return done

    async def _stored_over(self, records: Sequence[Generation]) -> list[StoredPoint]:
        """The points stored over the records' own time span (one query)."""
        micros = [microseconds_since_epoch(r.created_at) for r in records]
        return await self.database.stored(min(micros) * 1000, (max(micros) + 1) * 1000)

    async def record(self, ids: Mapping[str, Any], *, keep_stored: bool = False) -> tuple[Recorded, list[Generation]]:
        """Any set of ids (id -> API key label, or None): fetched, then upserted over the points stored in
        their records' time span. `keep_stored`: an id already stored once is not rewritten (the push drain:
        the nightly capture's analytics label wins over a pushed key name). Returns the records too."""
        bodies = Bodies()
        fetched = await self.fetcher.fetch_records(ids, bodies.add)
        done = Recorded(fetched=len(fetched.records))
        stored = await self._stored_over(fetched.records) if fetched.records else []
        held = {point.generation_id for point in stored}
        records = [r for r in fetched.records if not (keep_stored and r.id in held)]
        done.reused, done.stored_points_read = len(fetched.records) - len(records), len(stored)
        done.take(fetched, await self.database.upsert(records, stored, bodies))
        return done, fetched.records


@dataclass
class DayRecording:
    """What capturing a day did: the listing, the records, the pace; `complete` is the day's verdict."""

    day: dt.date
    refresh: bool
    listing: Listing
    recorded: Recorded
    fetcher: RecordFetcher
    analytics_queries: int
    elapsed_s: float

    @property
    def refused(self) -> dict[str, str]:
        return self.recorded.refused

    @property
    def complete(self) -> bool:
        """Every enumerated id is stored (fetched and written now, or reused) and nothing was refused."""
        r = self.recorded
        return (not r.missing and not r.invalid and not r.refused and r.written == r.fetched
                and r.fetched + r.reused + r.next_day_ids_skipped == self.listing.ids_enumerated)

    @property
    def fetch_seconds(self) -> float:
        figures = self.fetcher.figures
        return 0.0 if figures.first_request_at is None else figures.last_answer_at - figures.first_request_at

    @property
    def records_per_second(self) -> float:
        return self.recorded.fetched / self.fetch_seconds if self.fetch_seconds else 0.0

    def problems(self) -> str:
        """What kept the day from being complete, with the ids and reasons (empty when complete)."""
        r = self.recorded
        missing = list(r.missing)
        reasons: dict[str, int] = {}
        for reason in r.missing.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        accounted = r.fetched + r.reused + r.next_day_ids_skipped
        found = "; ".join(p for p in (
            f"{len(missing)} generation(s) still missing after retries ({', '.join(missing[:20])}"
            f"{' ...' if len(missing) > 20 else ''}; reasons: {reasons})" if missing else "",
            f"{len(r.invalid)} record(s) invalid: {list(r.invalid.values())[:5]}" if r.invalid else "",
            f"{len(r.refused)} record(s) refused by InfluxDB: {dict(list(r.refused.items())[:5])}" if r.refused
            else "",
            f"{r.written} of {r.fetched} fetched record(s) written" if r.written != r.fetched and not r.refused
            else "",
            f"{accounted} of {self.listing.ids_enumerated} enumerated id(s) fetched or reused"
            if not self.complete and not (missing or r.invalid or r.refused) else "") if p)
        if not found:
            return ""
        return (f"day {self.day} is incomplete: {found}. Everything else was written; rerun the day to "
                "complete it.")

    def summary(self) -> dict[str, Any]:
        r, listing, pace = self.recorded, self.listing, self.fetcher.source.pace
        return {
            "day": self.day.isoformat(), "enumerated": listing.ids_enumerated, "reused": r.reused,
            "fetched": r.fetched, "written": r.written, "refresh": self.refresh,
            "refused_by_influxdb": len(r.refused), "missing": len(r.missing), "invalid": len(r.invalid),
            "stored_points_read": r.stored_points_read, "ranks_kept": r.kept, "stale_points_deleted": r.stale_deleted,
            "duplicates_skipped": listing.duplicate_ids_across_windows,
            "next_day_ids_skipped": r.next_day_ids_skipped, "windows": listing.windows_queried,
            "windows_split": listing.windows_split, "analytics_queries": self.analytics_queries,
            "count_queries": listing.count_queries, "analytics_row_limit": listing.row_limit,
            "expected_from_counts": listing.expected_from_counts, "retries": self.fetcher.figures.retries,
            "fetch_requests": self.fetcher.figures.requests, "timed_out_attempts": self.fetcher.figures.timeouts,
            "throttled_429": pace.figures.throttled,
            "throttled_429_lone": pace.figures.throttled_lone, "account_pauses": pace.figures.account_pauses,
            "paused_seconds": round(pace.figures.paused_s, 3), "rate_decreases": pace.figures.decreases,
            "final_rps": round(pace.rps, 1), "peak_in_flight": pace.figures.peak_in_flight,
            "records_per_second": round(self.records_per_second, 1), "fetch_seconds": round(self.fetch_seconds, 3),
            "fetch_p50_ms": pace.percentile_ms(0.5), "fetch_p99_ms": pace.percentile_ms(0.99),
            "seconds": round(self.elapsed_s, 3),
        }


def first_error(error: BaseException) -> BaseException:
    """The first real failure inside a task group's ExceptionGroup: what the caller should see."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def capture_day(openrouter: OpenRouterSettings, influx: InfluxSettings, day: dt.date, *,
                      refresh: bool = False, retries: RecordRetries | None = None,
                      analytics_rpm: int = ANALYTICS_RPM) -> DayRecording:
    """Capture `day` into the ledger, windows overlapping (see the module's docstring). `retries` and
    `analytics_rpm` replace the defaults (tests)."""
    check_capturable(day)
    started = time.monotonic()
    listing, recorded = Listing(), Recorded()
    async with OpenRouterSource(openrouter, analytics_rpm=analytics_rpm) as source, \
            LedgerDatabase(influx) as database:
        ledger = Ledger(source, database, refresh=refresh, retries=retries)
        room = asyncio.Semaphore(OPEN_WINDOWS)

        async def one(window: IdWindow) -> None:
            try:
                recorded.add(await ledger.window(window, day))
            finally:
                room.release()

        try:
            async with asyncio.TaskGroup() as group:
                async for window in day_windows(source, day, listing):
                    await room.acquire()
                    group.create_task(one(window))
        except BaseExceptionGroup as failed:
            raise first_error(failed) from None
        return DayRecording(day, refresh, listing, recorded, ledger.fetcher, source.analytics_queries,
                            time.monotonic() - started)


def record_day(openrouter: OpenRouterSettings, influx: InfluxSettings, day: dt.date, *,
               refresh: bool = False) -> DayRecording:
    """Capture `day` and upsert every record not stored whole already (all of them with `refresh`); the
    caller decides what an incomplete day means. The objects alive before it (a Dagster run worker's imports)
    are kept out of full garbage collections meanwhile: each took 70-110 ms with the event loop stopped."""
    gc.freeze()
    try:
        return uvloop.run(capture_day(openrouter, influx, day, refresh=refresh))
    finally:
        gc.unfreeze()
