"""The drain: journaled ids past their 404 lag -> `GET /generation` -> the ledger, as the nightly capture does.

One identity, one writer: a pushed id is fetched by the capture's own fetching (`fetching.DayFetch`: the
shared pace, retries, hedges) and written by the capture's own writer (`DayWriter`: the encoder, the rank
book seeded from what is stored), so the nightly pull lands on the very points push wrote and reuses them
(no second fetch, no second series). The span's cost and tokens are only checked against the record; a
difference is noted on the id (`differs: ...`) and shown by the nightly's push coverage, never taken.

An id whose record is already stored once (the nightly got there first) is marked drained without a fetch
and without a rewrite: the nightly's analytics key label wins over the pushed key name. An id still 404 or
failing after the capture's retries stays in the journal, due again later (`RETRY_DELAYS_S`); the nightly
capture takes it in any case. Rows are marked as their batch is written, so a killed drain redoes at most
what it had in flight, and a redo lands on the same points.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.journal import JournalRow
from usage_pipeline.influx.day_writer import DayWriter
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.capture import stream_batches
from usage_pipeline.openrouter.capture_types import CaptureReport, StoredRecords
from usage_pipeline.openrouter.client import OpenRouterClient
from usage_pipeline.openrouter.enumeration import IdWindow
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration
from usage_pipeline.openrouter.records import RecordRetries
from usage_pipeline.openrouter.windows import Bucket, Window

DRAIN_BATCH = 5_000  # ids per round at most
WINDOW_ROWS = 2_000  # ids per window: the stored points of its time range are read once
WINDOW_GAP = dt.timedelta(minutes=5)  # a longer gap between ids starts a new window (reads stay small)
WINDOW_PAD = dt.timedelta(minutes=2)  # a record's created_at may trail its span's start
RETRY_DELAYS_S = (30.0, 120.0, 600.0, 3_600.0)  # a miss is due again after these, then hourly
COST_REL_TOL = 1e-9


def span_differences(row: JournalRow, record: Generation) -> str | None:
    """What the span said that the record does not (None: they agree or the span said nothing)."""
    if row.error:
        return None  # an error span carries no usage
    found = []
    if row.total_cost is not None and (record.total_cost is None or not math.isclose(
            row.total_cost, record.total_cost, rel_tol=COST_REL_TOL, abs_tol=1e-15)):
        found.append(f"total_cost span {row.total_cost!r} record {record.total_cost!r}")
    for name, pushed, stored in (("input_tokens", row.input_tokens, record.tokens_prompt),
                                 ("output_tokens", row.output_tokens, record.tokens_completion)):
        if pushed is not None and pushed != stored:
            found.append(f"{name} span {pushed} record {stored}")
    return "differs: " + "; ".join(found) if found else None


def _moment(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // 1000 / 1e6, dt.UTC)


class PushedIds:
    """The capture's `IdSource` over journal rows: windows of nearby ids, in time order, not overlapping."""

    def __init__(self, rows: Sequence[JournalRow]) -> None:
        ordered = sorted(rows, key=lambda r: r.start_ns)
        chunks: list[list[JournalRow]] = []
        for row in ordered:
            if (not chunks or len(chunks[-1]) >= WINDOW_ROWS
                    or _moment(row.start_ns) - _moment(chunks[-1][-1].start_ns) > WINDOW_GAP):
                chunks.append([])
            chunks[-1].append(row)
        self._windows: list[IdWindow] = []
        start = _moment(ordered[0].start_ns) - WINDOW_PAD if ordered else None
        for n, chunk in enumerate(chunks):
            assert start is not None
            last = _moment(chunk[-1].start_ns)
            end = (last + WINDOW_PAD if n == len(chunks) - 1
                   else last + (_moment(chunks[n + 1][0].start_ns) - last) / 2 + dt.timedelta(microseconds=1))
            self._windows.append((Window(start, end, len(chunk)), {r.id: r.api_key_name for r in chunk}))
            start = end

    def count_buckets(self) -> list[Bucket]:
        return []

    def windows(self, buckets: list[Bucket]) -> Iterator[IdWindow]:
        return iter(self._windows)


@dataclass
class DrainReport:
    due: int = 0
    fetched: int = 0
    reused: int = 0  # stored already (the nightly, or an earlier drain): no fetch
    written: int = 0
    differs: int = 0
    postponed: dict[str, str] = field(default_factory=dict)  # id -> why it is due again later
    capture: CaptureReport = field(default_factory=lambda: CaptureReport(day="push"))


class _DrainSide:
    """The fetching's `CaptureSide` for journal rows, and their `StoredRecords`: marks rows as they land."""

    def __init__(self, client: OpenRouterClient, rows: Sequence[JournalRow], writer: DayWriter,
                 connection: sqlite3.Connection, report: DrainReport) -> None:
        self.client = client
        self.day = dt.datetime.now(dt.UTC).date()
        self.report = report.capture
        self.retries = RecordRetries(not_found=client.not_found_retries)
        self.stored: StoredRecords | None = self
        self._enumeration = PushedIds(rows)
        self._rows = {row.id: row for row in rows}
        self._reused: dict[Window, set[str]] = {}
        self._writer, self._connection, self._drain = writer, connection, report

    @property
    def enumeration(self) -> PushedIds:
        return self._enumeration

    def accept(self, gen_id: str, api_key: Any, data: dict[str, Any]) -> Generation | None:
        try:
            record = Generation.from_api(data, api_key=api_key)
        except InvalidGeneration as exc:
            self._drain.postponed[gen_id] = f"invalid: {exc}"
            return None
        if record.id != gen_id:
            self._drain.postponed[gen_id] = f"invalid: GET /generation?id={gen_id} answered id {record.id!r}"
            return None
        return record

    def missing(self, gen_id: str, reason: str) -> None:
        self._drain.postponed[gen_id] = f"missing: {reason}"

    # StoredRecords
    def window_opened(self, window: Window, ids: Mapping[str, Any]) -> Collection[str]:
        """On the enumeration's thread: the ids stored once already are marked when the window closes."""
        stored = self._writer.window_opened(window, ids)
        self._reused[window] = set(stored)
        return stored

    def window_closed(self, window: Window) -> None:
        """On the caller's thread, like every journal write of the round."""
        self._writer.window_closed(window)
        reused = self._reused.pop(window, set())
        journal.mark_drained(self._connection, dict.fromkeys(reused), time.time())
        self._drain.reused += len(reused)

    def write(self, batch: Sequence[Generation]) -> None:
        result = self._writer.write(batch)
        outcomes: dict[str, str | None] = {}
        for record in batch:
            if record.id in result.refused:
                self._drain.postponed[record.id] = f"refused by InfluxDB: {result.refused[record.id]}"
            else:
                outcomes[record.id] = span_differences(self._rows[record.id], record)
        journal.mark_drained(self._connection, outcomes, time.time())
        self._drain.fetched += len(batch)
        self._drain.written += len(outcomes)
        self._drain.differs += sum(outcome is not None for outcome in outcomes.values())


def drain_once(client: OpenRouterClient, store: InfluxStore, connection: sqlite3.Connection,
               now: float | None = None, limit: int = DRAIN_BATCH) -> DrainReport:
    """Fetch and store the ids due now; what is left due again later is in `postponed`."""
    now = time.time() if now is None else now
    rows = journal.due(connection, now, limit)
    report = DrainReport(due=len(rows))
    if not rows:
        return report
    with DayWriter(store, any_key=True) as writer:
        side = _DrainSide(client, rows, writer, connection, report)
        for batch in stream_batches(side):
            side.write(batch)
    if report.postponed:
        attempts = {row.id: row.attempts for row in rows}
        until = {gen_id: now + RETRY_DELAYS_S[min(attempts[gen_id], len(RETRY_DELAYS_S) - 1)]
                 for gen_id in report.postponed}
        journal.postpone(connection, report.postponed, until)
    return report


def drain_forever(client: OpenRouterClient, store: InfluxStore, connection: sqlite3.Connection,
                  stop: threading.Event, interval_s: float = 1.0, on_round: Any = None) -> None:
    """Drain until `stop` is set; each round's report goes to `on_round`."""
    while not stop.is_set():
        report = drain_once(client, store, connection)
        if on_round is not None and report.due:
            on_round(report)
        if report.due < DRAIN_BATCH:
            stop.wait(interval_s)
