"""`daily_budgets`: each budget of an organisation's day against its exact spend, built with the day's summaries.

Built from the same deduplicated ledger as `daily_usage` and replaced with it in one transaction, so the
comparison is always of the day's stored rows; a budget changed in the organisations file applies when the
day is next built. Only budgets that are set get a row (a key or user with a budget and no spend: 0 spent).
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pandas

from usage_pipeline.budgets import Budgets
from usage_pipeline.duck.tables import ORG_COLUMN, column_definitions

BUDGETS_TABLE = "daily_budgets"
BUDGETS_SCHEMA: tuple[tuple[str, str], ...] = (
    ("day", "DATE NOT NULL"),
    ORG_COLUMN,
    ("scope", "VARCHAR NOT NULL"),  # organisation, api_key or user
    ("who", "VARCHAR NOT NULL"),  # the organisation, the API key's label, the external user
    ("budget_usd", "DOUBLE NOT NULL"),
    ("spend_usd", "DOUBLE NOT NULL"),  # the day's sum of `usage`
    ("over_usd", "DOUBLE NOT NULL"),  # spend_usd - budget_usd when above it, else 0
)

# Over `ledger` (one row per generation, see summaries.load_ledger) and `budgets` (scope, who, budget_usd).
_QUERY = """
    WITH spend AS (
        SELECT 'organisation' AS scope, $org AS who, fsum(usage) AS usd FROM ledger
        UNION ALL SELECT 'api_key', api_key, fsum(usage) FROM ledger WHERE api_key IS NOT NULL GROUP BY api_key
        UNION ALL SELECT 'user', external_user, fsum(usage) FROM ledger WHERE external_user IS NOT NULL
                  GROUP BY external_user)
    SELECT $day AS day, $org AS org, scope, who, budget_usd, coalesce(spend.usd, 0) AS spend_usd,
           greatest(coalesce(spend.usd, 0) - budget_usd, 0) AS over_usd
    FROM budgets LEFT JOIN spend USING (scope, who) ORDER BY scope, who"""


def day_budgets(conn: duckdb.DuckDBPyConnection, params: Mapping[str, object], budgets: Budgets) -> pandas.DataFrame:
    """The day's `daily_budgets` rows, in its declared schema, from the `ledger` table on `conn`."""
    conn.execute("CREATE TABLE budgets (scope VARCHAR, who VARCHAR, budget_usd DOUBLE)")
    if budgets:
        conn.executemany("INSERT INTO budgets VALUES (?, ?, ?)", [[b.scope, b.who, b.usd] for b in budgets.members])
    conn.execute(f"CREATE TABLE {BUDGETS_TABLE} ({column_definitions(BUDGETS_SCHEMA)})")
    conn.execute(f"INSERT INTO {BUDGETS_TABLE} BY NAME {_QUERY}", {"day": params["day"], "org": params["org"]})
    return conn.execute(f"SELECT * FROM {BUDGETS_TABLE}").df()
