"""The drain: journaled ids past their 404 lag -> `GET /generation` -> the ledger, as the nightly capture does.

One identity, one engine: a round's due ids go to `ledger.Ledger.record`, the capture's own fetching (the
same pace and retries) and writing (the same points, ranked over what is stored), so the nightly pull
lands on the very points push wrote and reuses them (no second fetch, no second series). The span's cost
and tokens are only checked against the record; a difference is noted on the id (`differs: ...`) and
shown by the nightly's push coverage, never taken.

An id whose record is already stored once (the nightly got there first) is not rewritten: the nightly's
analytics key label wins over the pushed key name. An id still 404 or failing after the engine's retries
stays in the journal, due again later (`RETRY_DELAYS_S`); the nightly capture takes it in any case. A
round's rows are marked once it is written whole, so a killed drain redoes at most one round, and a redo
lands on the same points.

A round holds the lock of each day it writes (`day_lock`); a day the nightly capture holds is left for a later
round, and the other days go on. Once an hour the drain prunes the journal (`journal.prune`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.journal import JournalRow
from usage_pipeline.day_lock import DayBusy, DayLocks
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.upserts import LedgerDatabase
from usage_pipeline.ledger import Ledger, first_error
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import OpenRouterSource

DRAIN_BATCH = 5_000  # ids per round at most
RETRY_DELAYS_S = (30.0, 120.0, 600.0, 3_600.0)  # a miss is due again after these, then hourly
COST_REL_TOL = 1e-9
HELD_DAY_RETRY_S = 30.0  # ids of a day another writer holds are due again after this
PRUNE_EVERY_S = 3_600.0


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


@dataclass
class DrainReport:
    due: int = 0
    fetched: int = 0
    reused: int = 0  # stored already (the nightly, or an earlier drain): no fetch
    written: int = 0
    differs: int = 0
    postponed: dict[str, str] = field(default_factory=dict)  # id -> why it is due again later
    deferred: dict[str, str] = field(default_factory=dict)  # id -> which writer holds its day
    pruned: int = 0


async def drain_round(ledger: Ledger, connection: sqlite3.Connection, now: float, limit: int = DRAIN_BATCH, *,
                      locks: DayLocks) -> DrainReport:
    """Fetch and store the ids due at `now` of the days no other writer holds; what is left due again later is
    in `postponed`, the ids of held days in `deferred`."""
    rows = journal.due(connection, now, limit)
    report = DrainReport(due=len(rows))
    with ExitStack() as held:
        for day in sorted({row.day for row in rows}):
            try:
                held.enter_context(locks.hold(dt.date.fromisoformat(day), "the push drain"))
            except DayBusy as busy:
                report.deferred.update((row.id, f"waiting: {busy}") for row in rows if row.day == day)
        if report.deferred:
            journal.defer(connection, report.deferred, now + HELD_DAY_RETRY_S)
        rows = [row for row in rows if row.id not in report.deferred]
        if rows:
            await _record(ledger, connection, rows, now, report)
    return report


async def _record(ledger: Ledger, connection: sqlite3.Connection, rows: list[JournalRow], now: float,
                  report: DrainReport) -> None:
    try:
        recorded, records = await ledger.record({row.id: row.api_key_name for row in rows}, keep_stored=True)
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None
    by_id = {row.id: row for row in rows}
    report.fetched, report.reused, report.written = recorded.fetched, recorded.reused, recorded.written
    report.postponed = {**{i: f"missing: {why}" for i, why in recorded.missing.items()},
                        **{i: f"invalid: {why}" for i, why in recorded.invalid.items()},
                        **{i: f"refused by InfluxDB: {why}" for i, why in recorded.refused.items()}}
    outcomes = {record.id: span_differences(by_id[record.id], record) for record in records
                if record.id not in report.postponed}
    report.differs = sum(outcome is not None for outcome in outcomes.values())
    journal.mark_drained(connection, outcomes, time.time())
    if report.postponed:
        until = {gen_id: now + RETRY_DELAYS_S[min(by_id[gen_id].attempts, len(RETRY_DELAYS_S) - 1)]
                 for gen_id in report.postponed}
        journal.postpone(connection, report.postponed, until)


async def drain(openrouter: OpenRouterSettings, influx: InfluxSettings, connection: sqlite3.Connection,
                stop: asyncio.Event, interval_s: float = 1.0,
                on_round: Callable[[DrainReport], None] | None = None, *, locks: DayLocks,
                retention_days: int) -> None:
    """Drain until `stop` is set, one engine (and so one learned pace) for every round, pruning the journal
    every `PRUNE_EVERY_S`; each round's report goes to `on_round`."""
    async with OpenRouterSource(openrouter) as source, LedgerDatabase(influx) as database:
        ledger, prune_at = Ledger(source, database), 0.0
        while not stop.is_set():
            report = await drain_round(ledger, connection, time.time(), locks=locks)
            if time.monotonic() >= prune_at:
                report.pruned = journal.prune(connection, dt.datetime.now(dt.UTC).date(), retention_days)
                prune_at = time.monotonic() + PRUNE_EVERY_S
            if on_round is not None and (report.due or report.pruned):
                on_round(report)
            if report.due < DRAIN_BATCH:
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except TimeoutError:
                    pass


def drain_once(openrouter: OpenRouterSettings, influx: InfluxSettings, connection: sqlite3.Connection,
               now: float | None = None, limit: int = DRAIN_BATCH, *, locks: DayLocks) -> DrainReport:
    """One round, for a caller without an event loop."""
    async def once() -> DrainReport:
        async with OpenRouterSource(openrouter) as source, LedgerDatabase(influx) as database:
            return await drain_round(Ledger(source, database), connection, time.time() if now is None else now,
                                     limit, locks=locks)

    return asyncio.run(once())
