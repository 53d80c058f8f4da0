"""Store day summaries in the pipeline's private DuckDB file and publish snapshots of it.

DuckDB lets one process write a file, and any process holding the file open (even read-only) stops
another from opening it for writing. So the pipeline never writes the file analysts open: it
replaces days in a private store, then copies the whole store into a temp file beside the published
path and renames it over the published file. An analyst's open connection keeps reading the old
inode; new connections see the new snapshot. An exclusive flock on `<published>.lock` serializes
pipeline processes so their store writes and publishes never interleave.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
from filelock import FileLock

from usage_pipeline.duck.history import HISTORY_DAY_TABLES, HISTORY_SCHEMAS
from usage_pipeline.duck.summaries import SUMMARY_TABLES, TABLE_SCHEMAS, DaySummary
from usage_pipeline.duck.tables import add_missing_columns, ensure_table
from usage_pipeline.duck.today import TODAY_SCHEMA, TODAY_TABLE

log = logging.getLogger(__name__)

SNAPSHOT_STORAGE_VERSION = "v1.4.0"
"""The DuckDB storage format the published file is written in, chosen on purpose: DuckDB 1.4.0's own, the
newest that every DuckDB from 1.4 on reads. The pipeline writes with Python duckdb 2.0, whose own format
(storage version 69) DuckDB 1.4.x and the 1.5.x CLI refuse ("can only read versions between 64 and 68"),
while analysts open the file with whatever DuckDB they have. Only the snapshot is written in it: the private
store keeps 2.0's format. A column type or feature that this format cannot hold makes `publish` fail
(`SnapshotCopyError`) rather than publish a file that old readers cannot open;
`usage_pipeline_tests/test_published_readers.py` reads every published table with the DuckDB 1.5 CLI and
Python duckdb 1.4."""


class SnapshotCopyError(RuntimeError):
    """Copying the store into the published format (`SNAPSHOT_STORAGE_VERSION`) failed, e.g. on a column type
    that format cannot hold: nothing was published, the file analysts open is left as it was."""


@dataclass(frozen=True)
class PublishReport:
    """How long a publish took and how big the published snapshot is."""

    path: Path
    seconds: float
    bytes: int


def store_path_for(published: Path) -> Path:
    """The private store beside a published file: `data/usage.duckdb` -> `data/usage.pipeline.duckdb`."""
    return published.with_suffix(".pipeline.duckdb")


def lock_path_for(published: Path) -> Path:
    """The flock file serializing pipeline processes that write `published` and its store."""
    return published.with_name(published.name + ".lock")


def publisher_lock(published: Path) -> FileLock:
    """The exclusive publisher lock of `published` (`with publisher_lock(path):` blocks until other
    processes and threads release it).

    Re-entrant within a thread (filelock counts nested acquisitions per thread), so a caller may hold it
    around opening the store, making the whole replace-and-publish one critical section, and still call
    `publish`.
    """
    path = lock_path_for(published).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), is_singleton=True)


def replace_day(conn: duckdb.DuckDBPyConnection, summary: DaySummary) -> None:
    """Make the store hold exactly `summary` for its organisation's day: a rebuild replaces, never adds to, a
    day, and never touches another organisation's rows of it.

    An exact day is never also an aggregate one: the day's OpenRouter aggregates (`history_by_model`,
    `history_by_api_key`, when the store has them) and provisional rows go in the same transaction.
    """
    missing = [table for table in SUMMARY_TABLES if table not in summary.tables]
    if missing:
        raise ValueError(f"summary of {summary.day} lacks tables {missing}")
    for table in SUMMARY_TABLES:
        ensure_table(conn, table, TABLE_SCHEMAS[table])
    stored = {name for (name,) in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = current_schema()").fetchall()}
    others = {**{table: HISTORY_SCHEMAS[table] for table in HISTORY_DAY_TABLES}, TODAY_TABLE: TODAY_SCHEMA}
    for table, schema in others.items():
        if table in stored:
            add_missing_columns(conn, table, schema)  # an older store's rows are the default organisation's
    conn.begin()
    try:
        for table in others:  # the exact day replaces aggregates, provisional rows
            if table in stored:
                conn.execute(f"DELETE FROM {table} WHERE day = ? AND org = ?", [summary.day, summary.org])
        for table in SUMMARY_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE day = ? AND org = ?", [summary.day, summary.org])
            conn.register("day_rows", summary.tables[table])
            try:
                _check_rows_are_of_day(conn, table, summary)
                conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM day_rows")
            finally:
                conn.unregister("day_rows")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def publish(conn: duckdb.DuckDBPyConnection, published: Path) -> PublishReport:
    """Atomically replace `published` with a snapshot of the database `conn` is connected to."""
    with publisher_lock(published):
        started = time.perf_counter()
        source = _current_database(conn, published)
        published.parent.mkdir(parents=True, exist_ok=True)
        temp = published.with_name(f".{published.name}.{uuid.uuid4().hex}.tmp")
        try:
            _copy_database(conn, source, temp)
            _fsync(temp)
            os.replace(temp, published)
            _fsync(published.parent)
        finally:
            for leftover in (temp, Path(f"{temp}.wal")):
                leftover.unlink(missing_ok=True)
        _warn_of_foreign_wal(published)
        return PublishReport(
            path=published, seconds=time.perf_counter() - started, bytes=published.stat().st_size
        )


def _check_rows_are_of_day(conn: duckdb.DuckDBPyConnection, table: str, summary: DaySummary) -> None:
    """Refuse rows of another day or organisation (in `day_rows`): only the summary's are deleted, so they
    would pile up."""
    (other_days, other_orgs) = conn.execute(
        "SELECT count(*) FILTER (WHERE day IS DISTINCT FROM CAST(? AS DATE)), "
        "count(*) FILTER (WHERE org IS DISTINCT FROM ?) FROM day_rows", [summary.day, summary.org]
    ).fetchall()[0]  # fetchall: DuckDB 2.0 keeps a fetchone() result open, blocking register()
    if other_days:
        raise ValueError(f"{table} of {summary.day} holds {other_days} rows of other days")
    if other_orgs:
        raise ValueError(f"{table} of {summary.org} {summary.day} holds {other_orgs} rows of other organisations")


def _current_database(conn: duckdb.DuckDBPyConnection, published: Path) -> str:
    """Name of the database to snapshot; refuses to publish a file onto itself."""
    name, path = conn.execute(
        "SELECT database_name, path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()[0]
    if path and Path(path).resolve() == published.resolve():
        raise ValueError(f"the connection is on the published file {published}; connect to the store")
    return str(name)


def _copy_database(conn: duckdb.DuckDBPyConnection, source: str, target: Path) -> None:
    """Copy every table of `source` into a new DuckDB file in `SNAPSHOT_STORAGE_VERSION`, fully checkpointed
    (no WAL left)."""
    alias = f"snapshot_{uuid.uuid4().hex}"
    try:
        conn.execute(f"ATTACH {_sql_string(str(target))} AS {alias} "
                     f"(STORAGE_VERSION {_sql_string(SNAPSHOT_STORAGE_VERSION)})")
    except duckdb.Error as exc:
        raise _snapshot_error(source, exc) from exc
    try:
        conn.execute(f"COPY FROM DATABASE {_sql_identifier(source)} TO {alias}")
        conn.execute(f"CHECKPOINT {alias}")
    except duckdb.Error as exc:
        raise _snapshot_error(source, exc) from exc
    finally:
        conn.execute(f"DETACH {alias}")
    if Path(f"{target}.wal").exists():
        raise RuntimeError(f"snapshot {target} still has a WAL after DETACH; refusing to publish it")


def _snapshot_error(source: str, exc: duckdb.Error) -> SnapshotCopyError:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return SnapshotCopyError(
        f"cannot publish {source}: the snapshot is written in DuckDB storage version {SNAPSHOT_STORAGE_VERSION} "
        f"(SNAPSHOT_STORAGE_VERSION, so that DuckDB 1.4 and later open it) and copying the store into it failed: "
        f"{reason}")


def _warn_of_foreign_wal(published: Path) -> None:
    """A `.wal` beside the published file belongs to an analyst writing into an old snapshot; until
    they close, new connections fail with 'WAL does not match database file'."""
    wal = Path(f"{published}.wal")
    if wal.exists():
        log.warning("%s exists: a connection wrote into the published file; new connections fail until it closes", wal)


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk so a crash cannot publish a half-written snapshot."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
