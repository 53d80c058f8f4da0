"""The published DuckDB file opens in DuckDB 1.4 and later, as analysts open it.

The pipeline writes with Python duckdb 2.0; the file is written in `SNAPSHOT_STORAGE_VERSION` so that older
DuckDB reads it too. A file of real content (exact days through `summarize_day`/`replace_day`, aggregate days
through the history backfill's `write_history`, then `publish`: usage_history.write_usage_file) is read back
whole, every published table, by:

- the DuckDB CLI 1.5 (PyPI's duckdb-cli, in the dev extra) as an analyst types it: `duckdb -readonly FILE -c`;
- Python duckdb 1.4, in a venv of its own that the test makes once (usage_pipeline_tests.venvs).

Every DuckDB query of the README and docs/ runs as printed, in the CLI, on such a file with today's hours too.

Each must see every column the schemas declare (TABLE_SCHEMAS, HISTORY_SCHEMAS) with its declared type and
nullability, and every row as duckdb 2.0 sees it: so a schema change that brings a type the old format or the
old readers cannot hold fails here, and `publish` itself refuses a store it cannot write in that format.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from openrouter_emulator.dataset import API_KEYS
from usage_pipeline.budgets import parse_budgets
from usage_pipeline.duck.history import HISTORY_SCHEMAS
from usage_pipeline.duck.publish import SNAPSHOT_STORAGE_VERSION, SnapshotCopyError, publish, store_path_for
from usage_pipeline.duck.summaries import TABLE_SCHEMAS
from usage_pipeline_tests.test_pipeline import readme_blocks
from usage_pipeline_tests.usage_history import write_today, write_usage_file
from usage_pipeline_tests.venvs import cached_venv, venvs_dir

CLI_REQUIREMENT = "duckdb-cli==1.5.6"  # as pinned in pyproject.toml's dev extra
CLI_VERSION = "v1.5."
OLD_PYTHON_DUCKDB = "duckdb==1.4.5"  # the last 1.4 release
PUBLISHED_TABLES = {"daily_usage", "daily_usage_by_provider", "daily_usage_by_api_key", "daily_usage_by_user",
                    "daily_totals", "daily_budgets", "history_by_model", "history_by_api_key", "model_names"}
COLUMNS_SQL = ("SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
               "WHERE table_schema = 'main' ORDER BY table_name, column_name")
# Run by Python duckdb 1.4 in its venv (isolated: `-I`, so nothing of this project's environment is imported).
OLD_READER = """
import datetime, json, sys
import duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
def plain(value):  # JSON has no dates: text, as str() prints them
    return str(value) if isinstance(value, (datetime.date, datetime.datetime)) else value
out = {"version": duckdb.__version__, "columns": [list(row) for row in conn.execute(sys.argv[2]).fetchall()],
       "tables": {}}
for table in sys.argv[3:]:
    rows = conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    out["tables"][table] = [[plain(value) for value in row] for row in rows]
print(json.dumps(out))
"""


# How each column type comes back from a reader's JSON: DATE and TIMESTAMP as text (the CLI prints `…:50.57515`
# where Python prints `…:50.575150`), the rest as the value itself.
FROM_JSON: dict[str, Callable[[Any], object] | None] = {
    "DATE": dt.date.fromisoformat, "TIMESTAMP": dt.datetime.fromisoformat, "VARCHAR": None, "BIGINT": None,
    "DOUBLE": None}


def from_json(sql_type: str, value: object) -> object:
    parse = FROM_JSON[sql_type]
    return parse(value) if parse is not None and value is not None else value


def declared_columns() -> list[list[str]]:
    """[table, column, type, nullable] of every published column, as information_schema names them."""
    schemas = {**TABLE_SCHEMAS, **HISTORY_SCHEMAS}
    return sorted([table, name, sql_type.replace(" NOT NULL", ""), "NO" if "NOT NULL" in sql_type else "YES"]
                  for table, columns in schemas.items() for name, sql_type in columns)


@dataclass(frozen=True)
class Table:
    """A published table as the project's own duckdb (2.0) reads it: column types in order, every row."""

    types: tuple[str, ...]
    rows: list[list[object]]

    def typed(self, rows: list[list[object]]) -> list[list[object]]:
        """Rows that a reader printed as JSON, back to Python values by the declared types."""
        return [[from_json(t, v) for t, v in zip(self.types, row, strict=True)] for row in rows]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two exact days and three aggregate days of the emulator's organisation, published by the pipeline."""
    path = tmp_path_factory.mktemp("published") / "usage.duckdb"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    budgets = parse_budgets({"daily_usd": 1, "api_keys": {API_KEYS[0].label: 1000}, "users": {"nobody": 0.5}},
                            "default", "test")  # one crossed, one not, one without spend: daily_budgets has rows
    write_usage_file(path, exact_days=[yesterday - dt.timedelta(days=n) for n in (1, 0)],
                     aggregate_days=[yesterday - dt.timedelta(days=n) for n in (4, 3, 2)], generations_per_day=300,
                     budgets=budgets)
    return path


@pytest.fixture(scope="module")
def reference(published: Path) -> dict[str, Table]:
    """Every published table, every row, as the project's own duckdb (2.0) reads it."""
    with duckdb.connect(str(published), read_only=True) as conn:
        names = {name for (name,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert names == PUBLISHED_TABLES
        assert [list(row) for row in conn.execute(COLUMNS_SQL).fetchall()] == declared_columns()
        tables = {name: Table(tuple(t for _, t, *_ in conn.execute(f"DESCRIBE {name}").fetchall()),
                              [list(row) for row in conn.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()])
                  for name in sorted(names)}
    assert all(table.rows for table in tables.values()), {n: len(t.rows) for n, t in tables.items()}  # real content
    return tables


@pytest.fixture(scope="module")
def duckdb_cli() -> str:
    """The `duckdb` command of the dev extra (this interpreter's scripts first, then PATH). Missing or of another
    version, the test fails with the install command: the promise is kept only where it is checked."""
    path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    found = shutil.which("duckdb", path=path)
    install = f"{sys.executable} -m pip install {CLI_REQUIREMENT} (or: bash bin/setup)"
    if found is None:
        pytest.fail(f"the DuckDB CLI is not installed; install it: {install}")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if not version.startswith(CLI_VERSION):
        pytest.fail(f"{found} is DuckDB {version!r}, not the {CLI_VERSION}x CLI these tests read with: {install}")
    return found


def cli_json(cli: str, path: Path, sql: str) -> list[dict[str, Any]]:
    done = subprocess.run([cli, "-readonly", "-json", str(path), "-c", sql], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and not done.stderr, f"duckdb -readonly {path} -c {sql!r}: {done.stderr}"
    return json.loads(done.stdout or "[]")


def test_every_declared_column_type_is_compared_as_its_readers_print_it() -> None:
    """A schema change that brings a new column type fails here first: say in FROM_JSON how readers print it, and
    the read-backs below prove that the old format and old readers keep it."""
    assert {sql_type for _, _, sql_type, _ in declared_columns()} <= set(FROM_JSON)


def test_the_published_file_is_in_the_chosen_storage_version(published: Path) -> None:
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{published}' AS published (READ_ONLY)")
        [(version,)] = conn.execute(
            "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = 'published'").fetchall()
    assert version == f"{SNAPSHOT_STORAGE_VERSION}+"  # DuckDB's tag: readable by this version and later


def test_the_duckdb_cli_reads_every_published_table(published: Path, reference: dict[str, Table],
                                                    duckdb_cli: str) -> None:
    columns = [list(row.values()) for row in cli_json(duckdb_cli, published, COLUMNS_SQL)]
    assert columns == declared_columns()
    for name, table in reference.items():
        rows = [list(row.values()) for row in cli_json(duckdb_cli, published, f"SELECT * FROM {name} ORDER BY ALL")]
        assert table.typed(rows) == table.rows, name


def test_python_duckdb_1_4_reads_every_published_table(published: Path, reference: dict[str, Table],
                                                       request: pytest.FixtureRequest) -> None:
    venv = cached_venv(venvs_dir(request.config), "duckdb-1.4", [OLD_PYTHON_DUCKDB])
    if venv.built_in_s:
        print(f"\nmade the {OLD_PYTHON_DUCKDB} venv in {venv.built_in_s:.1f} s")
    done = subprocess.run([str(venv.python), "-I", "-c", OLD_READER, str(published), COLUMNS_SQL, *reference],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout)
    assert read["version"].startswith("1.4.")
    assert read["columns"] == declared_columns()
    for name, table in reference.items():
        assert table.typed(read["tables"][name]) == table.rows, name


def test_publish_refuses_a_store_that_the_old_format_cannot_hold(tmp_path: Path) -> None:
    """A VARIANT column (DuckDB 1.5+) cannot be written in the 1.4 format: publish says so and leaves the
    published file as it was."""
    published = tmp_path / "usage.duckdb"
    with duckdb.connect(str(store_path_for(published))) as conn:
        conn.execute("CREATE TABLE daily_totals AS SELECT DATE '2026-11-20' AS day, 1 AS requests")
        publish(conn, published)
        before = published.read_bytes()
        conn.execute("CREATE TABLE events AS SELECT 42::VARIANT AS payload")
        with pytest.raises(SnapshotCopyError, match=f"storage version {SNAPSHOT_STORAGE_VERSION}.*VARIANT"):
            publish(conn, published)
    assert published.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["usage.duckdb", "usage.pipeline.duckdb", "usage.duckdb.lock"])


def test_every_duckdb_query_of_the_docs_runs_as_printed_in_the_cli(tmp_path: Path, duckdb_cli: str) -> None:
    """As an analyst pastes them: no date or name replaced, each answers rows; the proof query claims `exact`
    only for captured days (aggregate days hold OpenRouter's figures on both sides)."""
    path = tmp_path / "usage.duckdb"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    budgets = parse_budgets({"daily_usd": 1}, "default", "test")  # crossed: docs/alerts.md's query has rows
    write_usage_file(path, exact_days=[yesterday - dt.timedelta(days=n) for n in (1, 0)],
                     aggregate_days=[yesterday - dt.timedelta(days=n) for n in (4, 3, 2)], generations_per_day=300,
                     budgets=budgets)
    write_today(path, generations_per_day=2000)
    queries = [q for q in readme_blocks("sql") if "FROM generations" not in q]  # the rest are InfluxQL
    assert len(queries) == 8  # README 4, docs/history.md 3, docs/alerts.md 1
    answers = {query: cli_json(duckdb_cli, path, query) for query in queries}
    assert [query for query, rows in answers.items() if not rows] == []
    (proof,) = [rows for query, rows in answers.items() if "AS exact" in query]
    assert {(row["capture_status"], row["exact"]) for row in proof} == {("complete", True), ("aggregate", None)}
