"""Create a stored table from its declared schema, and bring a table made by an older version up to it.

Every table keyed by day is also keyed by `org`, the organisation whose usage a row counts. A store made
before organisations existed holds one organisation's rows, the implicit `default` one (OPENROUTER_API_KEY):
its tables get `org` filled with 'default', so the day's rows keep their meaning and the next rebuild of the
day replaces them rather than adding beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import duckdb

from usage_pipeline.organisations import DEFAULT_NAME

log = logging.getLogger(__name__)

ORG_COLUMN = ("org", "VARCHAR NOT NULL")  # second in every day table, after `day`

Schema = Sequence[tuple[str, str]]


def column_definitions(schema: Schema) -> str:
    """The `CREATE TABLE` column list of a schema."""
    return ", ".join(f'"{name}" {sql_type}' for name, sql_type in schema)


def ensure_table(conn: duckdb.DuckDBPyConnection, table: str, schema: Schema) -> list[str]:
    """Create `table` if missing, else add the columns added to its schema since; returns those added."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({column_definitions(schema)})")
    return add_missing_columns(conn, table, schema)


def add_missing_columns(conn: duckdb.DuckDBPyConnection, table: str, schema: Schema) -> list[str]:
    """A column added since (nullable, such as `model_slug`) is added, NULL in the rows already stored; `org`
    is added as 'default' in them (see the module). A stored day keeps its rows; a rebuild fills the column."""
    present = {name for (name,) in conn.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = current_schema() AND table_name = ?", [table]).fetchall()}
    added = []
    for name, sql_type in schema:
        if name in present:
            continue
        if (name, sql_type) == ORG_COLUMN:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN org VARCHAR DEFAULT '{DEFAULT_NAME}'")
            conn.execute(f"ALTER TABLE {table} ALTER org DROP DEFAULT")  # a new row must say its organisation
            conn.execute(f"ALTER TABLE {table} ALTER org SET NOT NULL")
        elif "NOT NULL" in sql_type:
            raise ValueError(f"the store's {table} lacks column {name} ({sql_type}), which cannot be added to "
                             "stored rows; rebuild the store")
        else:
            conn.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {sql_type}')
        added.append(name)
    if added:
        log.info("%s: added column(s) %s to the stored table", table, ", ".join(added))
    return added
