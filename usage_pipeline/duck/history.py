"""OpenRouter's daily aggregates in the DuckDB store, for the days the ledger did not capture.

Three tables beside the daily summaries: `history_by_model` and `history_by_api_key` (analytics rows as
answered, names being analytics labels), and `model_names` (`GET /models`, replaced whole each run: the
bridge between slugs and labels). Each aggregate day also gets a `daily_totals` row with capture_status
'aggregate' and `users` NULL (analytics cannot count external users that far back).

A day is exact or aggregate, never both: aggregates are written only for days without an exact
`daily_totals` row, checked inside the writing transaction so a capture that finished meanwhile wins,
and `publish.replace_day` deletes a day's aggregates when it writes the exact day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas

from usage_pipeline.duck.summaries import TABLE_SCHEMAS
from usage_pipeline.duck.tables import ORG_COLUMN, ensure_table
from usage_pipeline.openrouter.history import AggregateRow, HistoryRead
from usage_pipeline.openrouter.model_names import ModelName
from usage_pipeline.organisations import DEFAULT_NAME

AGGREGATE = "aggregate"  # daily_totals.capture_status of a day known only from OpenRouter's aggregates

HISTORY_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "history_by_model": (
        ("day", "DATE NOT NULL"), ORG_COLUMN, ("model_label", "VARCHAR"), ("requests", "BIGINT NOT NULL"),
        ("usage", "DOUBLE NOT NULL"), ("tokens_prompt", "BIGINT"), ("tokens_completion", "BIGINT"),
        ("tokens_reasoning", "BIGINT"), ("tokens_cached", "BIGINT"),
    ),
    "history_by_api_key": (
        ("day", "DATE NOT NULL"), ORG_COLUMN, ("api_key_label", "VARCHAR"), ("requests", "BIGINT NOT NULL"),
        ("usage", "DOUBLE NOT NULL"), ("tokens_prompt", "BIGINT"), ("tokens_completion", "BIGINT"),
    ),
    "model_names": (("slug", "VARCHAR NOT NULL"), ("permaslug", "VARCHAR"), ("name", "VARCHAR")),  # all orgs'
}
HISTORY_DAY_TABLES = ("history_by_model", "history_by_api_key")  # the tables with a `day`

_AGGREGATE_TOTALS = f"""
    INSERT INTO daily_totals BY NAME
    SELECT f.day, $org AS org, coalesce(m.requests, 0) AS requests, coalesce(m.usage, 0) AS total_cost,
           coalesce(m.tokens_prompt, 0) AS tokens_prompt, coalesce(m.tokens_completion, 0) AS tokens_completion,
           coalesce(m.models, 0) AS models, coalesce(k.api_keys, 0) AS api_keys, CAST(NULL AS BIGINT) AS users,
           coalesce(m.requests, 0) AS api_requests, coalesce(m.usage, 0) AS api_cost,
           '{AGGREGATE}' AS capture_status, $built_at AS built_at
    FROM fill_days f
    LEFT JOIN (SELECT day, sum(requests) AS requests, fsum(usage) AS usage, sum(tokens_prompt) AS tokens_prompt,
                      sum(tokens_completion) AS tokens_completion, count(DISTINCT model_label) AS models
               FROM history_by_model WHERE org = $org AND day IN (SELECT day FROM fill_days) GROUP BY day) m
      ON m.day = f.day
    LEFT JOIN (SELECT day, count(DISTINCT api_key_label) AS api_keys
               FROM history_by_api_key WHERE org = $org AND day IN (SELECT day FROM fill_days) GROUP BY day) k
      ON k.day = f.day"""


@dataclass(frozen=True)
class HistoryWrite:
    """What a history write stored: the aggregate days and their totals (from the per-model view)."""

    days_written: list[dt.date]
    days_skipped_exact: list[dt.date]  # asked for, but exact by the time of writing
    requests: int
    usage: float
    days_views_disagree: list[dt.date]  # per-model and per-key request counts differ (both kept as received)


def ensure_history_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the history tables and `daily_totals` if missing, or bring an older store's up to their schemas
    (`org` added as the default organisation); let an older store's `users` be NULL."""
    for table, columns in HISTORY_SCHEMAS.items():
        ensure_table(conn, table, columns)
    ensure_table(conn, "daily_totals", TABLE_SCHEMAS["daily_totals"])
    nullable = conn.execute(
        """SELECT is_nullable FROM information_schema.columns
           WHERE table_catalog = current_database() AND table_schema = current_schema()
             AND table_name = 'daily_totals' AND column_name = 'users'""").fetchall()
    if nullable == [("NO",)]:  # a store created before aggregate days existed
        conn.execute("ALTER TABLE daily_totals ALTER users DROP NOT NULL")


def exact_days(conn: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date,
               org: str = DEFAULT_NAME) -> set[dt.date]:
    """The organisation's days from `first` to `last` that hold a captured (non-aggregate) `daily_totals` row."""
    rows = conn.execute(
        "SELECT DISTINCT day FROM daily_totals WHERE day BETWEEN ? AND ? AND org = ? AND capture_status <> ?",
        [first, last, org, AGGREGATE]).fetchall()
    return {day for (day,) in rows}


def write_history(conn: duckdb.DuckDBPyConnection, read: HistoryRead, names: list[ModelName] | None,
                  org: str = DEFAULT_NAME) -> HistoryWrite:
    """Replace the organisation's aggregate rows of every asked day that has no exact row of it, and
    `model_names` when given, in one transaction."""
    ensure_history_tables(conn)
    conn.begin()
    try:
        exact = exact_days(conn, read.days[0], read.days[-1], org) if read.days else set()
        fill = [day for day in read.days if day not in exact]  # the guard: an exact day is never touched
        _days_table(conn, fill)
        for table in HISTORY_DAY_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE org = ? AND day IN (SELECT day FROM fill_days)", [org])
        conn.execute("DELETE FROM daily_totals WHERE org = ? AND day IN (SELECT day FROM fill_days) "
                     "AND capture_status = ?", [org, AGGREGATE])
        kept = set(fill)
        _insert(conn, "history_by_model", "model_label", [r for r in read.by_model if r.day in kept], org)
        _insert(conn, "history_by_api_key", "api_key_label", [r for r in read.by_api_key if r.day in kept], org)
        conn.execute(_AGGREGATE_TOTALS, {"built_at": dt.datetime.now(dt.UTC).replace(tzinfo=None), "org": org})
        conn.execute("DROP TABLE fill_days")
        if names is not None:
            conn.execute("DELETE FROM model_names")
            if names:
                conn.executemany("INSERT INTO model_names VALUES (?, ?, ?)",
                                 [[n.slug, n.permaslug, n.name] for n in names])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    written = [r for r in read.by_model if r.day in kept]
    return HistoryWrite(fill, sorted(exact & set(read.days)), sum(r.requests for r in written),
                        sum(r.usage for r in written), _disagreeing(read, kept))


def _days_table(conn: duckdb.DuckDBPyConnection, days: list[dt.date]) -> None:
    """A temporary table `fill_days (day DATE)` holding `days`."""
    conn.register("days_frame", pandas.DataFrame({"day": pandas.to_datetime(pandas.Series(days, dtype=object))}))
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE fill_days AS SELECT CAST(day AS DATE) AS day FROM days_frame")
    finally:
        conn.unregister("days_frame")


def _insert(conn: duckdb.DuckDBPyConnection, table: str, label_column: str, rows: list[AggregateRow],
            org: str) -> None:
    if not rows:
        return
    columns = [name for name, _ in HISTORY_SCHEMAS[table]]
    series: dict[str, pandas.Series] = {
        "day": pandas.to_datetime(pandas.Series([r.day for r in rows], dtype=object)),
        "org": pandas.Series([org] * len(rows), dtype=object),
        label_column: pandas.Series([r.label for r in rows], dtype=object),
        "requests": pandas.Series([r.requests for r in rows], dtype="int64"),
        "usage": pandas.Series([r.usage for r in rows], dtype="float64"),
    }
    for name in ("tokens_prompt", "tokens_completion", "tokens_reasoning", "tokens_cached"):
        if name in columns:  # nullable: a count analytics left out stays NULL
            series[name] = pandas.Series([getattr(r, name) for r in rows], dtype="Int64")
    frame = pandas.DataFrame(series)
    conn.register("history_rows", frame)
    try:
        select = ", ".join(f'CAST("{name}" AS {sql_type.replace(" NOT NULL", "")}) AS "{name}"'
                           for name, sql_type in HISTORY_SCHEMAS[table])
        conn.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM history_rows")
    finally:
        conn.unregister("history_rows")


def _disagreeing(read: HistoryRead, days: set[dt.date]) -> list[dt.date]:
    def per_day(rows: list[AggregateRow]) -> dict[dt.date, int]:
        totals: dict[dt.date, int] = {}
        for row in rows:
            if row.day in days:
                totals[row.day] = totals.get(row.day, 0) + row.requests
        return totals

    by_model, by_key = per_day(read.by_model), per_day(read.by_api_key)
    return sorted(day for day in days if by_model.get(day, 0) != by_key.get(day, 0))
