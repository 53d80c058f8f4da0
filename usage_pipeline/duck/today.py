"""`usage_today`: the hours of the days not yet captured, from what push has stored so far. Provisional.

The nightly capture proves a day whole; until it has (today, and yesterday before the 02:00 run), the
ledger holds what the push drain wrote: every generation Broadcast delivered and `GET /generation`
answered, which sampling, drops or a stopped receiver can leave short. So these rows say `provisional`,
and the day's `daily_usage` replaces them: `publish.replace_day` deletes a day's `usage_today` rows in the
transaction that stores its exact summary. The aggregation is the summaries' own (`load_ledger`, SQL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence

import duckdb
import pandas

from usage_pipeline.duck.summaries import TABLE_SCHEMAS, load_ledger
from usage_pipeline.duck.tables import ORG_COLUMN, ensure_table
from usage_pipeline.duck.tables import column_definitions as schema_columns
from usage_pipeline.organisations import DEFAULT_NAME

TODAY_TABLE = "usage_today"
TODAY_SCHEMA: tuple[tuple[str, str], ...] = (
    ("day", "DATE NOT NULL"),
    ORG_COLUMN,
    ("hour", "TIMESTAMP NOT NULL"),  # UTC, the hour's start
    ("model", "VARCHAR"),
    ("api_key", "VARCHAR"),
    ("external_user", "VARCHAR"),
    ("requests", "BIGINT NOT NULL"),
    ("total_cost", "DOUBLE NOT NULL"),
    ("usage", "DOUBLE NOT NULL"),
    ("tokens_prompt", "BIGINT NOT NULL"),
    ("tokens_completion", "BIGINT NOT NULL"),
    ("provisional", "BOOLEAN NOT NULL"),
    ("built_at", "TIMESTAMP NOT NULL"),  # when these figures were read (UTC)
)
MAX_OPEN_DAYS = 3  # days back from today that may still wait for their capture

_HOURLY = """
    SELECT $day AS day, $org AS org, date_trunc('hour', make_timestamp(time // 1000)) AS hour, model, api_key,
           external_user,
           count(*) AS requests, coalesce(fsum(total_cost), 0) AS total_cost, coalesce(fsum(usage), 0) AS usage,
           coalesce(sum(tokens_prompt), 0) AS tokens_prompt, coalesce(sum(tokens_completion), 0) AS tokens_completion,
           true AS provisional, $built_at AS built_at
    FROM ledger GROUP BY ALL ORDER BY hour, model NULLS LAST, api_key NULLS LAST, external_user NULLS LAST"""


def column_definitions() -> str:
    return schema_columns(TODAY_SCHEMA)


def open_days(captured: Sequence[dt.date], today: dt.date) -> list[dt.date]:
    """The days from the last captured one (exclusive) to today, at most MAX_OPEN_DAYS of them."""
    first = max([*captured, today - dt.timedelta(days=MAX_OPEN_DAYS)]) + dt.timedelta(days=1)
    return [first + dt.timedelta(days=n) for n in range((today - first).days + 1)]


def hourly_rows(days: Sequence[dt.date], chunks_of: Callable[[dt.date], Iterable[pandas.DataFrame]],
                built_at: dt.datetime, org: str = DEFAULT_NAME) -> pandas.DataFrame:
    """Hourly rows per model, key and user of each of the organisation's days, from its ledger points
    (deduplicated)."""
    frames = []
    for day in days:
        with duckdb.connect(":memory:") as conn:
            load_ledger(conn, day, chunks_of(day))
            conn.execute(f"CREATE TABLE hourly ({column_definitions()})")
            conn.execute(f"INSERT INTO hourly BY NAME {_HOURLY}", {"day": day, "org": org, "built_at": built_at})
            frames.append(conn.execute("SELECT * FROM hourly").df())
    if not frames:
        with duckdb.connect(":memory:") as conn:
            return conn.execute(f"CREATE TABLE hourly ({column_definitions()}); SELECT * FROM hourly").df()
    return pandas.concat(frames, ignore_index=True)


def replace_open_days(conn: duckdb.DuckDBPyConnection, rows: pandas.DataFrame) -> None:
    """The table holds exactly `rows` (every organisation's open days): nothing of a day already captured."""
    ensure_table(conn, TODAY_TABLE, TODAY_SCHEMA)
    conn.begin()
    try:
        conn.execute(f"DELETE FROM {TODAY_TABLE}")  # only open days live here; older ones were replaced
        conn.register("today_rows", rows)
        try:
            conn.execute(f"INSERT INTO {TODAY_TABLE} BY NAME SELECT * FROM today_rows")
        finally:
            conn.unregister("today_rows")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def captured_days(conn: duckdb.DuckDBPyConnection, since: dt.date, org: str = DEFAULT_NAME) -> list[dt.date]:
    """The organisation's days since `since` whose exact summary is stored (daily_totals, complete)."""
    exists = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'daily_totals' "
                          "AND database_name = current_database()").fetchall()[0][0]
    if not exists:
        return []
    ensure_table(conn, "daily_totals", TABLE_SCHEMAS["daily_totals"])  # an older store: org added as default
    found = conn.execute("SELECT DISTINCT day FROM daily_totals WHERE day >= ? AND org = ? "
                         "AND capture_status = 'complete'", [since, org]).fetchall()
    return [day for (day,) in found]
