"""Daily summaries: aggregation against pandas, idempotent day replacement, and publishing while
analysts (other processes) hold the published DuckDB file open. Real DuckDB files, real processes.

Days are stored and published exactly as the `daily_usage` asset does it: the `DailyUsageDatabase`
resource's `store_connection()` (the publisher lock, then dagster-duckdb's connection to the private
store), `replace_day`, then `publish`."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from usage_pipeline.defs.resources import DailyUsageDatabase
from usage_pipeline.duck import (
    SUMMARY_TABLES,
    TABLE_SCHEMAS,
    CaptureStatus,
    DaySummary,
    PublishReport,
    publish,
    publisher_lock,
    replace_day,
    store_path_for,
    summarize_day,
)
from usage_pipeline.duck.summaries import ModelLabels

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY_1 = dt.date(2025, 3, 1)
DAY_2 = dt.date(2025, 3, 2)
COMPLETE = CaptureStatus(api_requests=None, api_cost=None, status="complete")


def ledger_frame(day: dt.date, rows: int, seed: int) -> pd.DataFrame:
    """Synthetic ledger points of one day with every column InfluxDB may return, nulls included."""
    rng = np.random.default_rng(seed)
    start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()) * 10**9

    def pick(values: list[object]) -> list[object]:
        return [values[i] for i in rng.integers(0, len(values), rows)]

    def maybe_nan(values: np.ndarray, share: float) -> np.ndarray:
        values = values.astype(float)
        values[rng.random(rows) < share] = np.nan
        return values

    return pd.DataFrame(
        {
            "time": np.sort(rng.integers(start, start + 86_400 * 10**9, rows)),
            "model": pick(["openai/gpt-4o", "anthropic/claude-3.5-sonnet", "meta/llama-3-70b"]),
            "provider": pick(["OpenAI", "Anthropic", "Together", None]),
            "generation_id": [f"gen-{seed}-{i}" for i in range(rows)],
            "total_cost": rng.random(rows) / 100,
            "usage": maybe_nan(rng.random(rows) / 100, 0.1),
            "upstream_inference_cost": maybe_nan(rng.random(rows) / 100, 0.5),
            "cache_discount": maybe_nan(rng.random(rows) / 1000, 0.7),
            "latency": maybe_nan(rng.integers(50, 5000, rows), 0.1),
            "generation_time": maybe_nan(rng.integers(10, 4000, rows), 0.1),
            "moderation_latency": maybe_nan(rng.integers(1, 50, rows), 0.9),
            "tokens_prompt": rng.integers(1, 5000, rows),
            "tokens_completion": maybe_nan(rng.integers(1, 2000, rows), 0.05),
            "native_tokens_prompt": rng.integers(1, 5000, rows),
            "native_tokens_completion": rng.integers(1, 2000, rows),
            "native_tokens_reasoning": maybe_nan(rng.integers(0, 800, rows), 0.5),
            "native_tokens_cached": maybe_nan(rng.integers(0, 3000, rows), 0.5),
            "app_id": maybe_nan(rng.integers(1, 9, rows), 0.5),
            "finish_reason": pick(["stop", "length", None]),
            "native_finish_reason": pick(["stop", "end_turn", None]),
            "api_type": pick(["completions", None]),
            "origin": pick(["https://example.org", None]),
            "external_user": pick(["alice", "bob", "carol", None]),
            "api_key": pick(["key-a", "key-b", None]),
            "request_id": [f"req-{i}" for i in range(rows)],
            "session_id": pick(["s1", "s2", None]),
            "upstream_id": pick(["up-1", None]),
            "streamed": pick([True, False, None]),
            "cancelled": pick([True, False, False, False, None]),
            "is_byok": pick([True, False, False, None]),
        }
    )


def as_chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(frame), size)]


def summary_of(day: dt.date, rows: int, seed: int) -> DaySummary:
    return summarize_day(day, as_chunks(ledger_frame(day, rows, seed), 100), COMPLETE)


def publish_day(published: Path, summary: DaySummary) -> PublishReport:
    """Store and publish a day the way the `daily_usage` asset does (see the module docstring)."""
    with DailyUsageDatabase(path=str(published)).store_connection() as conn:
        replace_day(conn, summary)
        return publish(conn, published)


def read_table(path: Path, table: str, org: str = "default") -> list[tuple[object, ...]]:
    """An organisation's rows of a table in a stable order, without `built_at` (which differs on every build)
    and `org` (test_organisations_share_a_day_and_never_replace_each_other holds it)."""
    columns = "* EXCLUDE (built_at, org)" if table == "daily_totals" else "* EXCLUDE (org)"
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(f"SELECT {columns} FROM {table} WHERE org = ? ORDER BY ALL", [org]).fetchall()


def days_in(path: Path) -> list[dt.date]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return [row[0] for row in conn.execute("SELECT day FROM daily_totals ORDER BY day").fetchall()]


# --- aggregation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger() -> tuple[pd.DataFrame, DaySummary]:
    """A day split into chunks; one chunk lacks two columns (all null there, so InfluxDB omits them),
    one uses pandas' nullable dtypes and one repeats generations already seen."""
    frame = ledger_frame(DAY_1, 2_000, seed=1)
    chunks = as_chunks(frame, 500)
    frame.loc[500:999, ["external_user", "native_tokens_reasoning"]] = None
    chunks[1] = chunks[1].drop(columns=["external_user", "native_tokens_reasoning"])
    chunks[2] = chunks[2].convert_dtypes()  # the Influx reader's nullable dtypes: Int64, boolean, string
    chunks.append(chunks[0].iloc[:3])  # a repeated generation must count once
    capture = CaptureStatus(api_requests=2_001, api_cost=12.5, status="complete")
    return frame, summarize_day(DAY_1, chunks, capture)


def expected_by(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The same figures computed independently by pandas (NULL keys as "<null>")."""
    grouped = frame.fillna({key: "<null>" for key in keys}).groupby(keys, dropna=False)
    return grouped.agg(
        requests=("generation_id", "nunique"),
        total_cost=("total_cost", "sum"),
        usage=("usage", "sum"),
        tokens_prompt=("tokens_prompt", "sum"),
        tokens_completion=("tokens_completion", "sum"),
        tokens_reasoning=("native_tokens_reasoning", "sum"),
        tokens_cached=("native_tokens_cached", "sum"),
        byok_requests=("is_byok", lambda s: int((s == True).sum())),  # noqa: E712
        cancelled_requests=("cancelled", lambda s: int((s == True).sum())),  # noqa: E712
        avg_latency_ms=("latency", "mean"),
        p95_latency_ms=("latency", lambda s: s.quantile(0.95)),
        avg_generation_time_ms=("generation_time", "mean"),
    )


def assert_matches(actual: pd.DataFrame, expected: pd.DataFrame, keys: list[str]) -> None:
    actual = actual.fillna({key: "<null>" for key in keys}).set_index(keys).sort_index()
    expected = expected.sort_index()
    assert list(actual.index) == list(expected.index)
    for column in actual.columns.drop("day"):
        assert actual[column].to_numpy(dtype=float) == pytest.approx(
            expected[column].to_numpy(dtype=float), rel=1e-9, nan_ok=True
        ), column


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("daily_usage", ["model"]),
        ("daily_usage_by_provider", ["model", "provider"]),
        ("daily_usage_by_api_key", ["api_key", "model"]),
        ("daily_usage_by_user", ["external_user", "model"]),
    ],
)
def test_grouped_tables_match_pandas(ledger: tuple[pd.DataFrame, DaySummary], table: str, keys: list[str]) -> None:
    frame, summary = ledger
    actual = summary.tables[table].drop(columns=["model_slug", "model_label", "org"])  # names: their own test
    assert (actual["day"].dt.date == DAY_1).all() and (summary.tables[table]["org"] == "default").all()
    assert_matches(actual, expected_by(frame, keys)[list(actual.columns.drop(["day", *keys]))], keys)


def test_totals_match_pandas(ledger: tuple[pd.DataFrame, DaySummary]) -> None:
    frame, summary = ledger
    (totals,) = summary.tables["daily_totals"].to_dict("records")
    assert totals["requests"] == 2_000
    assert totals["total_cost"] == pytest.approx(frame["total_cost"].sum(), rel=1e-12)
    assert totals["tokens_prompt"] == frame["tokens_prompt"].sum()
    assert totals["tokens_completion"] == frame["tokens_completion"].sum()
    assert (totals["models"], totals["api_keys"], totals["users"]) == (
        frame["model"].nunique(),
        frame["api_key"].nunique(),
        frame["external_user"].nunique(),
    )
    assert (totals["api_requests"], totals["api_cost"], totals["capture_status"]) == (2_001, 12.5, "complete")


def test_rejects_points_of_another_day() -> None:
    with pytest.raises(ValueError, match="not on 2025-03-02"):
        summarize_day(DAY_2, [ledger_frame(DAY_1, 10, seed=3)], COMPLETE)


def test_zero_generation_day_still_has_totals(tmp_path: Path) -> None:
    summary = summarize_day(DAY_2, [], CaptureStatus(api_requests=0, api_cost=0.0, status="complete"))
    assert all(summary.tables[table].empty for table in SUMMARY_TABLES if table != "daily_totals")
    published = tmp_path / "usage.duckdb"
    publish_day(published, summary)
    assert read_table(published, "daily_totals") == [(DAY_2, 0, 0.0, 0, 0, 0, 0, 0, 0, 0.0, "complete")]
    assert read_table(published, "daily_usage") == []


# --- storing and publishing -------------------------------------------------------------------


def test_store_path_sits_beside_published() -> None:
    assert store_path_for(Path("data/usage.duckdb")) == Path("data/usage.pipeline.duckdb")


def test_rebuilding_a_day_replaces_it_and_leaves_other_days(tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    publish_day(published, summary_of(DAY_1, 300, seed=1))
    publish_day(published, summary_of(DAY_2, 300, seed=2))
    day_2_rows = {table: read_table(published, table) for table in SUMMARY_TABLES}

    rebuilt = summary_of(DAY_1, 200, seed=9)
    publish_day(published, rebuilt)
    once = {table: read_table(published, table) for table in SUMMARY_TABLES}
    publish_day(published, rebuilt)
    twice = {table: read_table(published, table) for table in SUMMARY_TABLES}

    assert once == twice  # no doubling
    for table in SUMMARY_TABLES:
        assert [row for row in twice[table] if row[0] == DAY_2] == [row for row in day_2_rows[table] if row[0] == DAY_2]
        assert len([row for row in twice[table] if row[0] == DAY_1]) == len(rebuilt.tables[table])
    assert [row[1] for row in twice["daily_totals"]] == [200, 300]


def test_organisations_share_a_day_and_never_replace_each_other(tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    frame = ledger_frame(DAY_1, 300, seed=1)
    publish_day(published, summarize_day(DAY_1, [frame], COMPLETE, org="acme"))
    publish_day(published, summarize_day(DAY_1, [ledger_frame(DAY_1, 120, seed=2)], COMPLETE, org="globex"))
    acme = {table: read_table(published, table, "acme") for table in SUMMARY_TABLES}
    publish_day(published, summarize_day(DAY_1, [ledger_frame(DAY_1, 80, seed=3)], COMPLETE, org="globex"))
    assert {table: read_table(published, table, "acme") for table in SUMMARY_TABLES} == acme  # untouched
    with duckdb.connect(str(published), read_only=True) as conn:
        assert conn.execute("SELECT org, requests FROM daily_totals ORDER BY org").fetchall() == [
            ("acme", 300), ("globex", 80)]
    mixed = summarize_day(DAY_1, [frame], COMPLETE, org="acme")
    mixed.tables["daily_usage"].loc[0, "org"] = "globex"  # a row of another organisation in acme's summary
    with duckdb.connect(str(store_path_for(published))) as conn, pytest.raises(
            ValueError, match="daily_usage of acme 2025-03-01 holds 1 rows of other organisations"):
        replace_day(conn, mixed)


def test_a_failed_replacement_leaves_the_day_as_it_was(tmp_path: Path) -> None:
    store = tmp_path / "usage.pipeline.duckdb"
    with duckdb.connect(str(store)) as conn:
        replace_day(conn, summary_of(DAY_1, 100, seed=1))
    before = {table: read_table(store, table) for table in SUMMARY_TABLES}
    bad = summary_of(DAY_1, 50, seed=9)
    bad.tables["daily_totals"] = bad.tables["daily_totals"].assign(day=pd.Timestamp(DAY_2))  # last table
    with duckdb.connect(str(store)) as conn, pytest.raises(ValueError, match="rows of other days"):
        replace_day(conn, bad)
    assert {table: read_table(store, table) for table in SUMMARY_TABLES} == before


def test_the_resource_writes_the_private_store_and_publishes_a_snapshot(tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    report = publish_day(published, summary_of(DAY_1, 50, seed=1))
    assert report.bytes == published.stat().st_size > 0
    assert days_in(published) == days_in(store_path_for(published)) == [DAY_1]


ANALYST = """
import json, sys, threading, duckdb
conn = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read_only")
conn.execute("BEGIN TRANSACTION")
seen = conn.execute("SELECT list(day ORDER BY day)::VARCHAR FROM daily_totals").fetchall()[0][0]
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
print("holding", flush=True)
queries, changed = 0, 0
while not done.is_set():  # keep querying, inside the open transaction, while the pipeline publishes
    now = conn.execute("SELECT list(day ORDER BY day)::VARCHAR FROM daily_totals").fetchall()[0][0]
    queries, changed = queries + 1, changed + (now != seen)
conn.execute("COMMIT")
after = conn.execute("SELECT list(day ORDER BY day)::VARCHAR FROM daily_totals").fetchall()[0][0]
print(json.dumps({"seen": seen, "after": after, "queries": queries, "changed": changed}), flush=True)
"""


@pytest.mark.parametrize("mode", ["read_write", "read_only"])
def test_publishing_while_an_analyst_process_holds_the_file(tmp_path: Path, mode: str) -> None:
    published = tmp_path / "usage.duckdb"
    publish_day(published, summary_of(DAY_1, 100, seed=1))
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(published), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert analyst.stdout is not None and analyst.stdin is not None
        assert analyst.stdout.readline().strip() == "holding"

        # The naive approach: writing straight into the held file fails, proving the hold is real.
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(published))

        report = publish_day(published, summary_of(DAY_2, 100, seed=2))
        assert report.bytes > 0
        assert days_in(published) == [DAY_1, DAY_2]  # a fresh connection sees the new day

        analyst.stdin.write("done\n")
        analyst.stdin.flush()
        result = json.loads(analyst.stdout.readline())
    finally:
        if analyst.poll() is None:
            analyst.kill()
        analyst.wait(timeout=10)
    assert result["queries"] > 0 and result["changed"] == 0
    assert result["seen"] == result["after"] == "[2025-03-01]"  # the held connection still answers, old data


WRITER = """
import pickle, sys
from pathlib import Path
from usage_pipeline.defs.resources import DailyUsageDatabase
from usage_pipeline.duck.publish import publish, replace_day
summary = pickle.loads(Path(sys.argv[2]).read_bytes())
sys.stdin.readline()
print("writing", flush=True)
published = Path(sys.argv[1])
with DailyUsageDatabase(path=str(published)).store_connection() as conn:  # as the daily_usage asset does
    replace_day(conn, summary)
    print(publish(conn, published).seconds, flush=True)
"""


def start_writer(published: Path, summary: DaySummary, tmp_path: Path) -> subprocess.Popen[str]:
    pickled = tmp_path / f"{summary.day}.pickle"
    pickled.write_bytes(pickle.dumps(summary))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(published), str(pickled)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )


def release(writer: subprocess.Popen[str]) -> None:
    assert writer.stdin is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()


def test_concurrent_writers_from_two_processes_both_land(tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    writers = [start_writer(published, summary_of(day, 100, seed=i), tmp_path) for i, day in enumerate([DAY_1, DAY_2])]
    for writer in writers:
        release(writer)
    for writer in writers:
        _, errors = writer.communicate(timeout=60)
        assert writer.returncode == 0, errors
    assert days_in(published) == [DAY_1, DAY_2]
    assert days_in(store_path_for(published)) == [DAY_1, DAY_2]


def test_a_writer_waits_for_the_publisher_lock(tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    writer = start_writer(published, summary_of(DAY_1, 10, seed=1), tmp_path)
    with publisher_lock(published):
        release(writer)
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        time.sleep(0.5)
        assert writer.poll() is None  # blocked on the flock, not failing on the store's DuckDB lock
        assert not published.exists() and not store_path_for(published).exists()
    _, errors = writer.communicate(timeout=60)
    assert writer.returncode == 0, errors
    assert days_in(published) == [DAY_1]


@pytest.mark.parametrize("table", ["daily_usage", "daily_usage_by_provider", "daily_usage_by_api_key",
                                   "daily_usage_by_user"])
def test_every_model_row_carries_its_slug_and_label_and_an_unknown_model_is_kept_unnamed(table: str) -> None:
    frame = ledger_frame(DAY_1, 400, seed=11)
    models = sorted(frame["model"].dropna().unique())
    named, unknown = models[:-1], models[-1]
    names = {m: ModelLabels(slug=f"slug-of/{m}", label=f"Label of {m}") for m in named}
    summary = summarize_day(DAY_1, [frame], COMPLETE, names)
    rows = summary.tables[table].dropna(subset=["model"])
    assert set(rows["model"]) == set(models)  # nothing dropped, the stored name kept as it is
    for row in rows.itertuples():
        if row.model == unknown:
            assert {str(row.model_slug), str(row.model_label)} <= {"nan", "None"}  # NULL
        else:
            assert (row.model_slug, row.model_label) == (f"slug-of/{row.model}", f"Label of {row.model}")
    assert rows["requests"].sum() == frame["model"].notna().sum()
    assert set(summary.tables[table].columns) == {name for name, _ in TABLE_SCHEMAS[table]}


def test_a_store_made_before_the_name_columns_gains_them_and_keeps_its_days(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    old_schema = {t: tuple(c for c in TABLE_SCHEMAS[t] if c[0] not in ("model_slug", "model_label"))
                  for t in SUMMARY_TABLES}
    old_day = summarize_day(DAY_1, [ledger_frame(DAY_1, 50, seed=1)], COMPLETE)
    with duckdb.connect(str(store)) as conn:
        for table in SUMMARY_TABLES:
            conn.execute(f"CREATE TABLE {table} ({', '.join(f'{n} {t}' for n, t in old_schema[table])})")
            conn.register("old_rows", old_day.tables[table][[n for n, _ in old_schema[table]]])
            conn.execute(f"INSERT INTO {table} SELECT * FROM old_rows")
            conn.unregister("old_rows")
        frame = ledger_frame(DAY_2, 30, seed=2)
        names = {m: ModelLabels("s/" + m, "L " + m) for m in frame["model"].dropna().unique()}
        replace_day(conn, summarize_day(DAY_2, [frame], COMPLETE, names))
        by_day = dict(conn.execute("SELECT day, count(model_slug) FROM daily_usage GROUP BY day").fetchall())
        days = dict(conn.execute("SELECT day, sum(requests) FROM daily_usage GROUP BY day").fetchall())
    assert by_day == {DAY_1: 0, DAY_2: len(names)}  # the old day kept, its names NULL until it is rebuilt
    assert days == {DAY_1: 50, DAY_2: 30}
