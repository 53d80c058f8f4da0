"""The push journal: every announced generation id, durable before the receiver answers 2xx.

SQLite in WAL mode with `synchronous=FULL`: a commit returns only once the WAL is fsynced, so a SIGKILL (or
a power cut) after the answer loses nothing. The id is the primary key, so a delivery replayed or sent twice
is one row (`deliveries` counts them). Commits are grouped (`JournalWriter`): deliveries arriving while one
commit's fsync runs are written by the next commit together, so one fsync answers many and the receiver's
throughput is not one disk flush per delivery. The writer never dies silently (OpenRouter does not retry, so
a delivery left unanswered is lost): see `JournalWriter`.

The drain worker (`drain`) reads due rows on connections of its own and marks them drained; the nightly
capture reads a day's rows for its push coverage. WAL lets all of them read while the receiver writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usage_pipeline.broadcast.spans import PushedSpan

log = logging.getLogger(__name__)
WRITER_BUSY_S = 2.0  # the longest the writer waits for another process's write lock; then the journal is failing
SCHEMA = """
CREATE TABLE IF NOT EXISTS pushed (
    id TEXT PRIMARY KEY,
    day TEXT NOT NULL,                -- the UTC day of the request's start
    start_ns INTEGER NOT NULL,
    received_at REAL NOT NULL,        -- unix seconds of the first delivery
    deliveries INTEGER NOT NULL DEFAULT 1,
    api_key_name TEXT,
    model TEXT,
    total_cost REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    error INTEGER NOT NULL,           -- every delivery so far was an error span
    due_at REAL NOT NULL,             -- when the drain may fetch it (past the record's 404 lag)
    attempts INTEGER NOT NULL DEFAULT 0,
    drained_at REAL,                  -- stored in the ledger (fetched and written, or found stored)
    outcome TEXT                      -- the last drain's word on it: a miss's reason, a figure that differs
);
CREATE INDEX IF NOT EXISTS pushed_due ON pushed (drained_at, due_at);
CREATE INDEX IF NOT EXISTS pushed_day ON pushed (day);
"""

# A replay adds a delivery; an error span never overwrites the figures of a good one.
UPSERT = """
INSERT INTO pushed (id, day, start_ns, received_at, api_key_name, model, total_cost, input_tokens,
                    output_tokens, error, due_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    deliveries = deliveries + 1,
    api_key_name = coalesce(api_key_name, excluded.api_key_name),
    model = coalesce(model, excluded.model),
    total_cost = coalesce(total_cost, excluded.total_cost),
    input_tokens = coalesce(input_tokens, excluded.input_tokens),
    output_tokens = coalesce(output_tokens, excluded.output_tokens),
    error = min(error, excluded.error)
"""


@dataclass(frozen=True, slots=True)
class JournalRow:
    id: str
    day: str
    start_ns: int
    api_key_name: str | None
    total_cost: float | None
    input_tokens: int | None
    output_tokens: int | None
    error: bool
    attempts: int


def span_day(span: PushedSpan) -> str:
    return dt.datetime.fromtimestamp(span.start_ns / 1e9, dt.UTC).date().isoformat()


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection in WAL mode with fsync on every commit; the schema created if new."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.executescript(SCHEMA)
    return connection


def _rows(spans: Iterable[PushedSpan], received_at: float, lag_s: float) -> list[tuple[object, ...]]:
    return [(s.id, span_day(s), s.start_ns, received_at, s.api_key_name, s.model, s.total_cost, s.input_tokens,
             s.output_tokens, int(s.error), received_at + lag_s) for s in spans]


Done = Callable[[BaseException | None], None]
Queued = tuple[Sequence[PushedSpan], float, Done]
# What a single delivery's rows can raise (an encoding, a type, a range): that delivery is refused, not the journal.
ROW_FAULTS = (ValueError, OverflowError, TypeError, sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)


class JournalRefused(ValueError):
    """The journal cannot store this delivery's rows as they are (answered 400); the writer goes on."""


class JournalStopped(RuntimeError):
    """The writer has stopped (the journal failed, or a bug): every delivery is answered 503 until a restart."""


class JournalWriter:
    """One thread that commits the deliveries queued while the previous commit ran, together.

    It cannot die silently. A group whose rows fail is committed again one delivery at a time, so only the
    delivery at fault is refused (JournalRefused). Anything else (the journal locked past WRITER_BUSY_S, a disk
    error, a full disk, a bug) stops it: `stopped` says why, `on_stop` is told (the receiver exits, so its
    supervisor restarts it), and every delivery queued or submitted later is answered JournalStopped at once."""

    def __init__(self, path: Path | str, lag_s: float, on_stop: Callable[[str], object] | None = None) -> None:
        self.path = path
        self.lag_s = lag_s
        self.commits = 0
        self.stopped: str | None = None
        self._on_stop = on_stop
        self._queue: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self._pending: list[Queued] = []  # taken from the queue, not answered yet
        self._connection = connect(path)
        self._connection.execute(f"PRAGMA busy_timeout = {int(WRITER_BUSY_S * 1000)}")
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def submit(self, spans: Sequence[PushedSpan], received_at: float, done: Done) -> None:
        """Journal the spans; `done(None)` is called (on the writer's thread) once they are durable, or
        `done(error)` once they are refused."""
        if self.stopped is not None:
            done(JournalStopped(f"the journal writer stopped: {self.stopped}"))
        else:
            self._queue.put((spans, received_at, done))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._connection.close()

    def _run(self) -> None:
        try:
            self._serve()
            return
        except BaseException as exc:  # noqa: BLE001 - a failing journal or a bug: stop loudly, never silently
            self.stopped = f"{type(exc).__name__}: {exc}"
        log.error("the journal writer stopped: %s", self.stopped)
        if self._on_stop is not None:
            _tell(self._on_stop, self.stopped)
        stopped = JournalStopped(f"the journal writer stopped: {self.stopped}")
        self._answer(len(self._pending), stopped)
        while (item := self._queue.get()) is not None:  # until close(): every delivery answered at once
            _tell(item[2], stopped)

    def _serve(self) -> None:
        while self._take_group():
            try:
                self._commit(self._pending)
                self._answer(len(self._pending), None)
            except ROW_FAULTS:  # one delivery's rows: commit each alone, refuse only the one at fault
                while self._pending:
                    try:
                        self._commit(self._pending[:1])
                        self._answer(1, None)
                    except ROW_FAULTS as exc:
                        self._answer(1, JournalRefused(f"the journal cannot store this delivery: {exc}"))

    def _take_group(self) -> bool:
        """Wait for a delivery, then take every one queued behind it (one commit for all); False on close()."""
        item = self._queue.get()
        if item is None:
            return False
        self._pending = [item]
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return True
            if more is None:
                self._queue.put(None)  # stop after this group
                return True
            self._pending.append(more)

    def _commit(self, group: list[Queued]) -> None:
        with self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            for spans, received_at, _ in group:
                self._connection.executemany(UPSERT, _rows(spans, received_at, self.lag_s))
        self.commits += 1

    def _answer(self, count: int, error: BaseException | None) -> None:
        answered, self._pending = self._pending[:count], self._pending[count:]
        for _, _, done in answered:
            _tell(done, error)


def _tell(callback: Callable[[Any], object], argument: Any) -> None:
    """Call back without letting a failing callback (its event loop closed) take the writer down."""
    try:
        callback(argument)
    except Exception as exc:  # noqa: BLE001 - logged: the writer must go on for the others
        log.warning("the journal writer could not call back: %s", exc)


def due(connection: sqlite3.Connection, now: float, limit: int) -> list[JournalRow]:
    """Undrained rows past their lag, oldest first."""
    found = connection.execute(
        "SELECT id, day, start_ns, api_key_name, total_cost, input_tokens, output_tokens, error, attempts FROM pushed "
        "WHERE drained_at IS NULL AND due_at <= ? ORDER BY due_at LIMIT ?", (now, limit)).fetchall()
    return [JournalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8]) for r in found]


def mark_drained(connection: sqlite3.Connection, outcomes: dict[str, str | None], now: float) -> None:
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("UPDATE pushed SET drained_at = ?, outcome = ?, attempts = attempts + 1 WHERE id = ?",
                               [(now, outcome, gen_id) for gen_id, outcome in outcomes.items()])


def postpone(connection: sqlite3.Connection, reasons: dict[str, str], until: dict[str, float]) -> None:
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("UPDATE pushed SET due_at = ?, outcome = ?, attempts = attempts + 1 WHERE id = ?",
                               [(until[gen_id], reason, gen_id) for gen_id, reason in reasons.items()])


def day_ids(connection: sqlite3.Connection, day: dt.date) -> dict[str, str | None]:
    """The day's pushed ids -> the last drain outcome (None: stored with nothing to say)."""
    return dict(connection.execute("SELECT id, outcome FROM pushed WHERE day = ?", (day.isoformat(),)).fetchall())


def day_mismatches(connection: sqlite3.Connection, day: dt.date) -> dict[str, str]:
    rows = connection.execute("SELECT id, outcome FROM pushed WHERE day = ? AND drained_at IS NOT NULL "
                              "AND outcome LIKE 'differs:%'", (day.isoformat(),)).fetchall()
    return dict(rows)


# Pruning. The nightly notes each day its checks proved exact (`prove_day`); the drain deletes the drained ids of
# those days once they are older than BROADCAST_JOURNAL_RETENTION_DAYS (`prune`). Undrained ids and days not proven
# stay. The table is made on first use, beside the schema above. SQLite reuses the freed pages, so the file stops
# growing at about the retention's days of ids (benchmarks/journal_size.py).
PROVEN_DAYS = "CREATE TABLE IF NOT EXISTS proven_days (day TEXT PRIMARY KEY, proven_at REAL NOT NULL)"
PRUNE_BATCH = 5_000  # rows deleted per transaction: the receiver's commit waits for one batch at most


def prove_day(connection: sqlite3.Connection, day: dt.date, now: float) -> None:
    connection.execute(PROVEN_DAYS)
    connection.execute("INSERT INTO proven_days VALUES (?, ?) ON CONFLICT (day) DO UPDATE SET proven_at = ?",
                       (day.isoformat(), now, now))


def prune(connection: sqlite3.Connection, today: dt.date, retention_days: int) -> int:
    """Delete the drained ids of proven days more than `retention_days` before `today`; how many went."""
    connection.execute(PROVEN_DAYS)
    cutoff, pruned = (today - dt.timedelta(days=retention_days)).isoformat(), 0
    while deleted := connection.execute(
            "DELETE FROM pushed WHERE rowid IN (SELECT rowid FROM pushed WHERE day < ? AND drained_at IS NOT NULL "
            "AND day IN (SELECT day FROM proven_days) LIMIT ?)", (cutoff, PRUNE_BATCH)).rowcount:
        pruned += deleted
    return pruned


def defer(connection: sqlite3.Connection, reasons: dict[str, str], until: float) -> None:
    """Due again at `until`, no attempt counted: another writer holds the ids' day (`day_lock`)."""
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("UPDATE pushed SET due_at = ?, outcome = ? WHERE id = ?",
                               [(until, reason, gen_id) for gen_id, reason in reasons.items()])
