"""A year of history from OpenRouter's aggregates: emulator over HTTP -> analytics -> a real DuckDB file, in Dagster.

Days the ledger did not capture get OpenRouter's per-model and per-key figures as answered (labels, not
slugs), in as few queries as the row limit allows; an exact day is never overwritten by aggregates, and an
exact run of a day removes its aggregates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, build_schedule_context

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OpenRouterResource
from usage_pipeline.duck import CaptureStatus, publish, replace_day, store_path_for, summarize_day
from usage_pipeline.duck.history import ensure_history_tables, write_history
from usage_pipeline.openrouter.history import HistoryError, parse_rows, read_history
from usage_pipeline_tests.conftest import client_for

TODAY = dt.datetime.now(dt.UTC).date()
YEAR = [TODAY - dt.timedelta(days=k) for k in range(365, 0, -1)]
OLD_DAY = TODAY - dt.timedelta(days=100)  # an aggregate-only day in the emulator


def run_history(server: EmulatorProcess, published: Path, **usage_db: Any) -> ExecuteInProcessResult:
    defs = build_defs({"openrouter": OpenRouterResource(api_key=server.management_key, base_url=server.base_url),
                       "influxdb": InfluxDBResource(url="http://127.0.0.1:9"),  # the history never reads InfluxDB
                       "usage_db": DailyUsageDatabase(path=str(published), **usage_db)})
    return defs.resolve_job_def("usage_history").execute_in_process(instance=DagsterInstance.ephemeral(),
                                                                    raise_on_error=False)


def metadata(result: ExecuteInProcessResult) -> dict[str, Any]:
    assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    (event,) = result.asset_materializations_for_node("duckdb__usage_history")
    return {name: value.value for name, value in event.metadata.items()}


def stored(published: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(published), read_only=True) as conn:
        return conn.execute(sql, list(params)).fetchall()


def exact_day(published: Path, day: dt.date) -> None:
    """Write `day` as a captured day of one generation, through the pipeline's own write path."""
    start_ns = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()) * 10**9
    frame = pd.DataFrame({"time": [start_ns + 5], "generation_id": ["gen-1-x"], "model": ["openai/gpt-4.1"],
                          "api_key": ["prod-backend"], "usage": [0.5], "total_cost": [0.5]})
    summary = summarize_day(day, [frame], CaptureStatus(api_requests=1, api_cost=0.5, status="complete"))
    with DailyUsageDatabase(path=str(published)).store_connection() as conn:
        replace_day(conn, summary)
        publish(conn, published)


def per_label(published: Path, table: str, day: dt.date) -> dict[str | None, int]:
    label = "model_label" if table == "history_by_model" else "api_key_label"
    return {name: requests for name, requests in stored(published, f"SELECT {label}, requests FROM {table} "
                                                                   "WHERE day = ?", day)}


@pytest.fixture(scope="module")
def capped() -> Iterator[EmulatorProcess]:
    """A private emulator whose settings the tests turn (row cap, labels)."""
    with run_emulator(seed=7, days=3, extra_args=["--analytics-rpm", "0"]) as server:
        yield server


def test_a_year_is_written_in_two_queries(emulator: EmulatorProcess, tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    queries_before = emulator.stats()["by_path"].get("/analytics/query", 0)
    meta = metadata(run_history(emulator, published))
    assert emulator.stats()["by_path"]["/analytics/query"] - queries_before == meta["analytics_queries"] == 2
    assert meta == {**meta, "days_written": 365, "days_skipped_exact": 0, "splits": 0,
                    "first_day": YEAR[0].isoformat(), "last_day": YEAR[-1].isoformat()}
    totals = stored(published, "SELECT day, requests, api_requests, total_cost, api_cost, models, api_keys, users, "
                               "capture_status, tokens_prompt FROM daily_totals ORDER BY day")
    assert [t[0] for t in totals] == YEAR
    assert {t[8] for t in totals} == {"aggregate"} and {t[7] for t in totals} == {None}  # users: unknown
    assert all(t[1] == t[2] and t[3] == t[4] for t in totals)
    assert meta["requests"] == sum(t[1] for t in totals)
    truth = emulator.truth(OLD_DAY)
    (old,) = [t for t in totals if t[0] == OLD_DAY]
    assert old[1] == truth["count"] > 0 and old[3] == pytest.approx(truth["cost"], rel=1e-9)
    assert (old[5], old[6], old[9]) == (len(truth["by_model_label"]), len(truth["by_api_key"]), truth["tokens_prompt"])
    assert per_label(published, "history_by_model", OLD_DAY) == truth["by_model_label"]  # labels, as answered
    assert per_label(published, "history_by_api_key", OLD_DAY) == truth["by_api_key"]
    yesterday = YEAR[-1]  # a generation day of the emulator: analytics counts it from its generations
    assert [t[1] for t in totals if t[0] == yesterday] == [emulator.truth(yesterday)["count"]]
    assert stored(published, "SELECT slug, permaslug, name FROM model_names ORDER BY slug") == sorted(
        (m["slug"], m["permaslug"], m["label"]) for m in truth["models"])


def test_truncated_answers_are_split_in_halves(capped: EmulatorProcess) -> None:
    with client_for(capped) as client:
        whole = read_history(client, YEAR)
        capped.configure(analytics_max_rows=1000)  # a year of models is ~4,400 rows, of keys ~1,700
        try:
            before = capped.stats()["by_path"]["/analytics/query"]
            split = read_history(client, YEAR)
            assert capped.stats()["by_path"]["/analytics/query"] - before == split.analytics_queries
        finally:
            capped.reset_config()
    assert (whole.analytics_queries, whole.splits) == (2, 0)
    assert split.splits >= 4 and split.analytics_queries == 2 + 2 * split.splits  # each split asks both halves
    assert sorted(split.by_model, key=repr) == sorted(whole.by_model, key=repr)
    assert sorted(split.by_api_key, key=repr) == sorted(whole.by_api_key, key=repr)


def test_labels_are_stored_as_received(capped: EmulatorProcess, tmp_path: Path) -> None:
    capped.configure(analytics_labels=False)  # a server answering ids: they are stored, not translated
    try:
        metadata(run_history(capped, tmp_path / "usage.duckdb", history_days=120))
    finally:
        capped.reset_config()
    truth = capped.truth(OLD_DAY)
    permaslugs = {m["label"]: m["permaslug"] for m in truth["models"]}
    assert per_label(tmp_path / "usage.duckdb", "history_by_model", OLD_DAY) == {
        permaslugs[label]: n for label, n in truth["by_model_label"].items()}
    assert set(per_label(tmp_path / "usage.duckdb", "history_by_api_key", OLD_DAY)) == {
        k["hash"] for k in truth["api_keys"]}


def test_exact_days_are_never_overwritten(emulator: EmulatorProcess, tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    with client_for(emulator) as client:
        read = read_history(client, YEAR)  # read while the days were still uncaptured...
    exact_day(published, OLD_DAY)  # ...then captured before the write: the write must leave them alone
    exact_day(published, YEAR[-1])
    with duckdb.connect(str(store_path_for(published))) as conn:
        written = write_history(conn, read, None)
    assert written.days_skipped_exact == [OLD_DAY, YEAR[-1]] and len(written.days_written) == 363
    meta = metadata(run_history(emulator, published))  # and a run after them skips them outright
    assert (meta["days_written"], meta["days_skipped_exact"]) == (363, 2)
    for day in (OLD_DAY, YEAR[-1]):
        assert stored(published, "SELECT requests, users, capture_status FROM daily_totals WHERE day = ?", day) == [
            (1, 0, "complete")]
        assert per_label(published, "history_by_model", day) == per_label(published, "history_by_api_key", day) == {}


def test_an_exact_run_of_a_day_removes_its_aggregates(emulator: EmulatorProcess, tmp_path: Path) -> None:
    published = tmp_path / "usage.duckdb"
    metadata(run_history(emulator, published, history_days=120))
    assert per_label(published, "history_by_model", OLD_DAY) == emulator.truth(OLD_DAY)["by_model_label"]
    (days_with_rows,) = stored(published, "SELECT count(DISTINCT day) FROM history_by_model")[0]
    exact_day(published, OLD_DAY)
    assert per_label(published, "history_by_model", OLD_DAY) == per_label(published, "history_by_api_key",
                                                                           OLD_DAY) == {}
    assert stored(published, "SELECT capture_status, count(*) FROM daily_totals GROUP BY 1 ORDER BY 1") == [
        ("aggregate", 119), ("complete", 1)]
    assert stored(published, "SELECT count(DISTINCT day) FROM history_by_model") == [(days_with_rows - 1,)]


def test_the_window_follows_usage_history_days(emulator: EmulatorProcess, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ten = metadata(run_history(emulator, tmp_path / "ten.duckdb", history_days=10))
    assert (ten["days_written"], ten["first_day"], ten["analytics_queries"]) == (
        10, YEAR[-10].isoformat(), 2)
    monkeypatch.setenv("USAGE_HISTORY_DAYS", "0")
    off = metadata(run_history(emulator, tmp_path / "off.duckdb"))
    assert (off["days_written"], off["analytics_queries"], off["models_named"]) == (0, 0, 13)
    monkeypatch.setenv("USAGE_HISTORY_DAYS", "400")
    refused = run_history(emulator, tmp_path / "bad.duckdb")
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.error.message.strip().endswith(
        "USAGE_HISTORY_DAYS must be a whole number of days from 0 to 365 (0: no history), got '400'")


def test_an_older_store_lets_users_be_null(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    with duckdb.connect(str(store)) as conn:  # daily_totals as created before aggregate days existed
        conn.execute("CREATE TABLE daily_totals (day DATE NOT NULL, requests BIGINT NOT NULL, total_cost DOUBLE "
                     "NOT NULL, tokens_prompt BIGINT NOT NULL, tokens_completion BIGINT NOT NULL, models BIGINT NOT "
                     "NULL, api_keys BIGINT NOT NULL, users BIGINT NOT NULL, api_requests BIGINT, api_cost DOUBLE, "
                     "capture_status VARCHAR NOT NULL, built_at TIMESTAMP NOT NULL)")
        insert = ("INSERT INTO daily_totals BY NAME SELECT DATE '2026-01-01' AS day, 1 AS requests, 0 AS total_cost, "
                  "0 AS tokens_prompt, 0 AS tokens_completion, 1 AS models, 1 AS api_keys, NULL AS users, "
                  "1 AS api_requests, 0 AS api_cost, 'aggregate' AS capture_status, now() AS built_at, "
                  "'default' AS org")
        with pytest.raises(duckdb.BinderException):  # neither NULL users nor `org` fit the old table
            conn.execute(insert)
        ensure_history_tables(conn)  # both brought up to date
        conn.execute(insert)
        assert conn.execute("SELECT users FROM daily_totals").fetchall() == [(None,)]


def test_the_schedule_runs_the_history_daily_at_three() -> None:
    defs = build_defs({"openrouter": OpenRouterResource(), "influxdb": InfluxDBResource(),
                       "usage_db": DailyUsageDatabase()})
    schedule = defs.resolve_schedule_def("usage_history_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "0 3 * * *", "UTC", "usage_history")
    tick = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=dt.datetime.now(dt.UTC)))
    assert len(tick.run_requests or []) == 1


GOOD = {"date__day": "2026-03-02T00:00:00.000Z", "model": "OpenAI: GPT-4.1", "request_count": "12",
        "total_usage": 0.25, "tokens_prompt": "100", "tokens_completion": 7, "reasoning_tokens": None,
        "cached_tokens": "0"}
FIRST, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 2)


def test_values_are_kept_exactly_as_answered() -> None:
    (row,) = parse_rows([GOOD, {**GOOD, "date__day": "2026-03-03T00:00:00Z"}], "model", FIRST, LAST)  # next day:
    assert (row.day, row.label, row.requests, row.usage) == (LAST, "OpenAI: GPT-4.1", 12, 0.25)  # inclusive end
    assert (row.tokens_prompt, row.tokens_completion, row.tokens_reasoning, row.tokens_cached) == (100, 7, None, 0)
    assert parse_rows([{**GOOD, "model": None}], "model", FIRST, LAST)[0].label is None


@pytest.mark.parametrize(("field", "value"), [
    ("request_count", "12.5"), ("request_count", "1e3"), ("request_count", 12.0), ("request_count", True),
    ("request_count", None), ("request_count", "-3"), ("request_count", " 12"), ("request_count", str(2**63)),
    ("total_usage", "0.25"), ("total_usage", None), ("total_usage", False), ("total_usage", float("nan")),
    ("total_usage", 2**60), ("tokens_prompt", "abc"), ("cached_tokens", 1.5), ("model", 5),
    ("date__day", "2026-03-02T05:00:00Z"), ("date__day", 20260302), ("date__day", "yesterday"),
    ("date__day", "2026-02-01T00:00:00Z"),
])
def test_a_bad_value_is_refused_naming_the_row_and_field(field: str, value: Any) -> None:
    with pytest.raises(HistoryError) as refused:
        parse_rows([{**GOOD, field: value}], "model", FIRST, LAST)
    message = str(refused.value)
    assert message.startswith("analytics row 0 ") and (field in message or "outside the days asked" in message)
