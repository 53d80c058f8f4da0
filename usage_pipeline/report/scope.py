"""Which organisations a report covers: temp views over the published tables, so the report's queries read
one organisation's rows (`--org`) or every organisation's, summed, without knowing about organisations.

The published file is opened read-only; temp views live in the connection's memory and shadow the file's
tables of the same name. With every organisation, a day's `daily_totals` rows are summed into one; its
capture_status is the organisations' own when they agree, else 'mixed' (the report flags such a day).
"""

from __future__ import annotations

import duckdb

MIXED = "mixed"


class OrganisationNotStored(ValueError):
    """The report was asked for an organisation the file holds no rows of."""
_DAY_TOTALS_OF_ALL = """
    SELECT day, sum(requests) AS requests, fsum(total_cost) AS total_cost, sum(tokens_prompt) AS tokens_prompt,
           sum(tokens_completion) AS tokens_completion, sum(models) AS models, sum(api_keys) AS api_keys,
           sum(users) AS users, sum(api_requests) AS api_requests, fsum(api_cost) AS api_cost,
           CASE WHEN count(DISTINCT capture_status) = 1 THEN any_value(capture_status) ELSE '{mixed}' END
               AS capture_status,
           max(built_at) AS built_at
    FROM {source} GROUP BY day"""


def organisations_stored(conn: duckdb.DuckDBPyConnection, tables: set[str]) -> list[str]:
    """The organisations the file holds rows of (tables made before organisations count as `default`)."""
    found: set[str] = set()
    for table in sorted(tables & set(_tables_with_org(conn))):
        found |= {org for (org,) in conn.execute(f"SELECT DISTINCT org FROM {_source(conn, table)}").fetchall()}
    return sorted(found)


def scope_to(conn: duckdb.DuckDBPyConnection, tables: set[str], org: str | None) -> None:
    """Shadow every table with an `org` column by a temp view of `org`'s rows, or with None of every
    organisation's (daily_totals summed per day). A file without `org` columns is one organisation's."""
    with_org = set(_tables_with_org(conn)) & tables
    for table in sorted(with_org):
        source = _source(conn, table)
        if org is not None:
            literal = "'" + org.replace("'", "''") + "'"  # a view's SQL cannot take parameters
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM {source} WHERE org = {literal}")
        elif table == "daily_totals":
            conn.execute(f"CREATE TEMP VIEW {table} AS {_DAY_TOTALS_OF_ALL.format(mixed=MIXED, source=source)}")


def _tables_with_org(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT table_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND column_name = 'org'").fetchall()]


def _source(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    (database,) = conn.execute("SELECT current_database()").fetchall()[0]
    return '"' + str(database).replace('"', '""') + f'".main.{table}'
