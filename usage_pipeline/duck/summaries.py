"""Turn one UTC day of ledger points into the daily summary tables analysts query.

Chunks are appended to a compressed in-memory DuckDB table (only the columns the summaries need, so
a million-row day stays well within memory) and every table is computed by SQL over it. Each table's
schema is declared once here and used both to shape the summary and to create the stored tables, so
what is built and what is stored cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb
import pandas

from usage_pipeline.budgets import Budgets
from usage_pipeline.duck.budgets import BUDGETS_SCHEMA, BUDGETS_TABLE, day_budgets
from usage_pipeline.duck.tables import ORG_COLUMN
from usage_pipeline.duck.tables import column_definitions as schema_columns
from usage_pipeline.organisations import DEFAULT_NAME

# Ledger columns the summaries read, with the type each chunk column is cast to. A chunk may lack
# any of them (InfluxDB omits all-null fields), which loads as NULL.
LEDGER_COLUMNS: dict[str, str] = {
    "time": "BIGINT", "generation_id": "VARCHAR", "model": "VARCHAR", "provider": "VARCHAR", "api_key": "VARCHAR",
    "external_user": "VARCHAR", "total_cost": "DOUBLE", "usage": "DOUBLE", "latency": "DOUBLE",
    "generation_time": "DOUBLE", "tokens_prompt": "BIGINT", "tokens_completion": "BIGINT",
    "native_tokens_reasoning": "BIGINT", "native_tokens_cached": "BIGINT", "is_byok": "BOOLEAN",
    "cancelled": "BOOLEAN",
}

_COUNT = "BIGINT NOT NULL"
_MONEY = "DOUBLE NOT NULL"

# Table name -> (column, DuckDB type) in stored order; `day` then `org` first everywhere.
TABLE_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    "daily_usage": (
        ("day", "DATE NOT NULL"),
        ORG_COLUMN,
        ("model", "VARCHAR"),
        ("model_slug", "VARCHAR"),
        ("model_label", "VARCHAR"),
        ("requests", _COUNT),
        ("total_cost", _MONEY),
        ("usage", _MONEY),
        ("tokens_prompt", _COUNT),
        ("tokens_completion", _COUNT),
        ("tokens_reasoning", _COUNT),
        ("tokens_cached", _COUNT),
        ("byok_requests", _COUNT),
        ("cancelled_requests", _COUNT),
        ("avg_latency_ms", "DOUBLE"),
        ("p95_latency_ms", "DOUBLE"),
        ("avg_generation_time_ms", "DOUBLE"),
    ),
    "daily_usage_by_provider": (
        ("day", "DATE NOT NULL"),
        ORG_COLUMN,
        ("model", "VARCHAR"),
        ("model_slug", "VARCHAR"),
        ("model_label", "VARCHAR"),
        ("provider", "VARCHAR"),
        ("requests", _COUNT),
        ("total_cost", _MONEY),
        ("tokens_prompt", _COUNT),
        ("tokens_completion", _COUNT),
        ("avg_latency_ms", "DOUBLE"),
    ),
    "daily_usage_by_api_key": (
        ("day", "DATE NOT NULL"),
        ORG_COLUMN,
        ("api_key", "VARCHAR"),
        ("model", "VARCHAR"),
        ("model_slug", "VARCHAR"),
        ("model_label", "VARCHAR"),
        ("requests", _COUNT),
        ("total_cost", _MONEY),
        ("tokens_prompt", _COUNT),
        ("tokens_completion", _COUNT),
    ),
    "daily_usage_by_user": (
        ("day", "DATE NOT NULL"),
        ORG_COLUMN,
        ("external_user", "VARCHAR"),
        ("model", "VARCHAR"),
        ("model_slug", "VARCHAR"),
        ("model_label", "VARCHAR"),
        ("requests", _COUNT),
        ("total_cost", _MONEY),
        ("tokens_prompt", _COUNT),
        ("tokens_completion", _COUNT),
    ),
    "daily_totals": (
        ("day", "DATE NOT NULL"),
        ORG_COLUMN,
        ("requests", _COUNT),
        ("total_cost", _MONEY),
        ("tokens_prompt", _COUNT),
        ("tokens_completion", _COUNT),
        ("models", _COUNT),
        ("api_keys", _COUNT),
        ("users", "BIGINT"),  # NULL on 'aggregate' days: analytics cannot count external users that far back
        ("api_requests", "BIGINT"),
        ("api_cost", "DOUBLE"),
        ("capture_status", "VARCHAR NOT NULL"),
        ("built_at", "TIMESTAMP NOT NULL"),
    ),
    BUDGETS_TABLE: BUDGETS_SCHEMA,  # duck/budgets.py
}

SUMMARY_TABLES: tuple[str, ...] = tuple(TABLE_SCHEMAS)

# `ledger` holds one row per generation_id (see _load), so count(*) is the distinct-generation count.
# Sums are coalesced to 0 so an all-null group reads as "none recorded"; averages stay NULL.
# fsum (compensated summation) keeps money totals stable and identical across rebuilds.
_SUMMARY_QUERIES: dict[str, str] = {
    "daily_usage": """
        SELECT $day AS day, $org AS org, model, any_value(model_slug) AS model_slug,
               any_value(model_label) AS model_label,
               count(*) AS requests,
               coalesce(fsum(total_cost), 0) AS total_cost, coalesce(fsum(usage), 0) AS usage,
               coalesce(sum(tokens_prompt), 0) AS tokens_prompt,
               coalesce(sum(tokens_completion), 0) AS tokens_completion,
               coalesce(sum(native_tokens_reasoning), 0) AS tokens_reasoning,
               coalesce(sum(native_tokens_cached), 0) AS tokens_cached,
               count(*) FILTER (WHERE is_byok) AS byok_requests,
               count(*) FILTER (WHERE cancelled) AS cancelled_requests,
               avg(latency) AS avg_latency_ms, quantile_cont(latency, 0.95) AS p95_latency_ms,
               avg(generation_time) AS avg_generation_time_ms
        FROM ledger LEFT JOIN names USING (model) GROUP BY model ORDER BY model NULLS LAST""",
    "daily_usage_by_provider": """
        SELECT $day AS day, $org AS org, model, any_value(model_slug) AS model_slug,
               any_value(model_label) AS model_label,
               provider, count(*) AS requests,
               coalesce(fsum(total_cost), 0) AS total_cost,
               coalesce(sum(tokens_prompt), 0) AS tokens_prompt,
               coalesce(sum(tokens_completion), 0) AS tokens_completion,
               avg(latency) AS avg_latency_ms
        FROM ledger LEFT JOIN names USING (model) GROUP BY model, provider
        ORDER BY model NULLS LAST, provider NULLS LAST""",
    "daily_usage_by_api_key": """
        SELECT $day AS day, $org AS org, api_key, model, any_value(model_slug) AS model_slug,
               any_value(model_label) AS model_label, count(*) AS requests,
               coalesce(fsum(total_cost), 0) AS total_cost,
               coalesce(sum(tokens_prompt), 0) AS tokens_prompt,
               coalesce(sum(tokens_completion), 0) AS tokens_completion
        FROM ledger LEFT JOIN names USING (model) GROUP BY api_key, model
        ORDER BY api_key NULLS LAST, model NULLS LAST""",
    "daily_usage_by_user": """
        SELECT $day AS day, $org AS org, external_user, model, any_value(model_slug) AS model_slug,
               any_value(model_label) AS model_label, count(*) AS requests,
               coalesce(fsum(total_cost), 0) AS total_cost,
               coalesce(sum(tokens_prompt), 0) AS tokens_prompt,
               coalesce(sum(tokens_completion), 0) AS tokens_completion
        FROM ledger LEFT JOIN names USING (model) GROUP BY external_user, model
        ORDER BY external_user NULLS LAST, model NULLS LAST""",
    "daily_totals": """
        SELECT $day AS day, $org AS org, count(*) AS requests, coalesce(fsum(total_cost), 0) AS total_cost,
               coalesce(sum(tokens_prompt), 0) AS tokens_prompt,
               coalesce(sum(tokens_completion), 0) AS tokens_completion,
               count(DISTINCT model) AS models, count(DISTINCT api_key) AS api_keys,
               count(DISTINCT external_user) AS users,
               $api_requests AS api_requests, $api_cost AS api_cost,
               $capture_status AS capture_status, $built_at AS built_at
        FROM ledger""",
}


@dataclass(frozen=True)
class CaptureStatus:
    """What the pipeline's checks concluded about the day's capture, stored beside the totals so
    analysts can tell a complete day from a partial one."""

    api_requests: int | None  # OpenRouter's own count for the day (analytics request_count)
    api_cost: float | None
    status: str  # e.g. "complete"


@dataclass(frozen=True)
class DaySummary:
    """Every summary table's rows for one organisation's day: the unit that replaces a day in the store."""

    day: dt.date
    tables: dict[str, pandas.DataFrame]  # table name -> that day's rows, columns as in TABLE_SCHEMAS
    org: str = DEFAULT_NAME


def column_definitions(table: str) -> str:
    """The `CREATE TABLE` column list of a summary table."""
    return schema_columns(TABLE_SCHEMAS[table])


@dataclass(frozen=True)
class ModelLabels:
    """A stored model name's slug and label (None where no OpenRouter source knows them): analysts filter
    `model_slug = 'openai/gpt-4.1'` without knowing the dated permaslug `/generation` stores."""

    slug: str | None
    label: str | None


def summarize_day(
    day: dt.date, chunks: Iterable[pandas.DataFrame], capture: CaptureStatus,
    names: Mapping[str, ModelLabels] | None = None, *, org: str = DEFAULT_NAME, budgets: Budgets | None = None,
) -> DaySummary:
    """Summarize one organisation's UTC day of deduplicated ledger points (read from its own database); a day
    without points still gets totals. `names` gives each stored model's slug and label (absent: NULL);
    `budgets` are the organisation's, compared with the day's spend in `daily_budgets`."""
    with duckdb.connect(":memory:") as conn:
        # A compressed in-memory database holds a 1M-row day in ~50 MiB instead of ~200 MiB.
        conn.execute("ATTACH ':memory:' AS day_ledger (COMPRESS)")
        conn.execute("USE day_ledger")
        load_ledger(conn, day, chunks)
        _load_names(conn, names or {})
        built_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        params = {
            "day": day,
            "org": org,
            "api_requests": capture.api_requests,
            "api_cost": capture.api_cost,
            "capture_status": capture.status,
            "built_at": built_at,
        }
        tables = {name: _materialize(conn, name, params) for name in SUMMARY_TABLES if name != BUDGETS_TABLE}
        tables[BUDGETS_TABLE] = day_budgets(conn, params, budgets or Budgets())
    return DaySummary(day=day, tables=tables, org=org)


def load_ledger(conn: duckdb.DuckDBPyConnection, day: dt.date, chunks: Iterable[pandas.DataFrame]) -> None:
    """Append the chunks to `ledger` one at a time, then check they all belong to `day` and drop
    any repeated generation so one generation is never counted or billed twice."""
    columns = ", ".join(f'"{name}" {sql_type}' for name, sql_type in LEDGER_COLUMNS.items())
    conn.execute(f"CREATE TABLE ledger ({columns})")
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        select = ", ".join(
            f'CAST(chunk."{name}" AS {sql_type})' if name in chunk.columns else f"CAST(NULL AS {sql_type})"
            for name, sql_type in LEDGER_COLUMNS.items()
        )
        conn.register("chunk", chunk)
        try:
            conn.execute(f"INSERT INTO ledger SELECT {select} FROM chunk")
        finally:
            conn.unregister("chunk")
    _check_day(conn, day)
    _drop_repeats(conn)


def _load_names(conn: duckdb.DuckDBPyConnection, names: Mapping[str, ModelLabels]) -> None:
    conn.execute("CREATE TABLE names (model VARCHAR PRIMARY KEY, model_slug VARCHAR, model_label VARCHAR)")
    if names:
        conn.executemany("INSERT INTO names VALUES (?, ?, ?)",
                         [[model, n.slug, n.label] for model, n in names.items()])


def _check_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    """Refuse points from another day or without an id: they would silently skew the day's figures."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    start_ns = int(start.timestamp()) * 1_000_000_000
    end_ns = start_ns + 86_400 * 1_000_000_000
    outside, without_id = conn.execute(
        """SELECT count(*) FILTER (WHERE time IS NULL OR time < $start OR time >= $end),
                  count(*) FILTER (WHERE generation_id IS NULL)
           FROM ledger""",
        {"start": start_ns, "end": end_ns},
    ).fetchall()[0]  # fetchall: DuckDB 2.0 keeps a fetchone() result open, blocking register()
    if outside:
        raise ValueError(f"{outside} ledger points are not on {day.isoformat()} (UTC)")
    if without_id:
        raise ValueError(f"{without_id} ledger points of {day.isoformat()} have no generation_id")


def _drop_repeats(conn: duckdb.DuckDBPyConnection) -> None:
    """Keep the latest point per generation_id; the ledger is deduplicated, so this is normally a
    cheap check that finds nothing to do."""
    (repeats,) = conn.execute(
        "SELECT count(*) - count(DISTINCT generation_id) FROM ledger"
    ).fetchall()[0]
    if repeats:
        conn.execute(
            """CREATE OR REPLACE TABLE ledger AS SELECT * FROM ledger
               QUALIFY row_number() OVER (PARTITION BY generation_id ORDER BY time DESC) = 1"""
        )


def _materialize(conn: duckdb.DuckDBPyConnection, table: str, params: Mapping[str, object]) -> pandas.DataFrame:
    """Run a table's query into a table of its declared schema, so the frame has exactly the stored
    columns and types."""
    conn.execute(f"CREATE TABLE {table} ({column_definitions(table)})")
    query = _SUMMARY_QUERIES[table]
    used = {name: value for name, value in params.items() if f"${name}" in query}
    conn.execute(f"INSERT INTO {table} BY NAME {query}", used)
    return conn.execute(f"SELECT * FROM {table}").df()
