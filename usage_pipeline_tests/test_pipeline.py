"""The daily_ledger job end to end: emulator -> real influxd -> checks -> DuckDB, in a real Dagster instance."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import requests
from dagster import (
    AssetSelection,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    Failure,
    build_schedule_context,
    define_asset_job,
)
from influxdb_client import Point, WritePrecision

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.capture_metadata import PLOTTED
from usage_pipeline.defs.generations import (
    checks_against_openrouter,
    generations,
    zero_duplicates,
)
from usage_pipeline.defs.organisations import add_organisations
from usage_pipeline.defs.partitions import OrgDay, capturable
from usage_pipeline.defs.resources import (
    BroadcastJournalResource,
    DailyUsageDatabase,
    InfluxDBResource,
    OpenRouterResource,
    OrganisationsResource,
)
from usage_pipeline.defs.summaries import daily_ledger_schedule, daily_usage
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline_tests.conftest import yesterday

SUMMARY_TABLES = ("daily_usage", "daily_usage_by_provider", "daily_usage_by_api_key", "daily_usage_by_user",
                  "daily_totals")


class Ledger:
    """One isolated ledger: its own InfluxDB database, DuckDB file and Dagster instance."""

    def __init__(self, emulator: EmulatorProcess, influxd: LocalInfluxd, root: Path) -> None:
        self.emulator = emulator
        self.database = f"test_{uuid.uuid4().hex[:10]}"
        self.duckdb_path = root / "usage.duckdb"
        self.resources: dict[str, Any] = {
            "openrouter": OpenRouterResource(api_key=emulator.management_key, base_url=emulator.base_url),
            "influxdb": InfluxDBResource(url=influxd.url, database=self.database),
            "usage_db": DailyUsageDatabase(path=str(self.duckdb_path)),
            "broadcast": BroadcastJournalResource(path=str(root / "broadcast.sqlite3")),
            "organisations": OrganisationsResource(),
        }
        self.defs = build_defs(self.resources)
        self.instance = DagsterInstance.ephemeral()
        add_organisations(self.instance, ["default"])  # no USAGE_ORGANISATIONS: the implicit organisation
        self.store = InfluxStore(InfluxSettings(url=influxd.url, database=self.database))

    def run(self, day: dt.date, job_name: str = "daily_ledger",
            defs: Definitions | None = None) -> ExecuteInProcessResult:
        job = (defs or self.defs).resolve_job_def(job_name)
        return job.execute_in_process(partition_key=OrgDay("default", day).key, instance=self.instance,
                                      raise_on_error=False)

    def verify_only(self, day: dt.date) -> ExecuteInProcessResult:
        """Run the checks and the summary without re-ingesting (so a tampered ledger stays tampered)."""
        verify = define_asset_job("verify_day", selection=AssetSelection.checks_for_assets(generations)
                                  | AssetSelection.assets(daily_usage))
        defs = Definitions(assets=[generations, daily_usage],
                           asset_checks=[zero_duplicates, checks_against_openrouter],
                           jobs=[verify], resources=self.resources)
        return self.run(day, "verify_day", defs)

    def truth(self, day: dt.date) -> dict[str, Any]:
        response = requests.get(f"{self.emulator.control_url}/truth", params={"date": day.isoformat()}, timeout=30)
        response.raise_for_status()
        return response.json()

    def summary(self, day: dt.date) -> dict[str, list[tuple]]:
        with duckdb.connect(str(self.duckdb_path), read_only=True) as conn:
            # the rows of the one organisation (`org` is checked apart), columns as before organisations
            return {t: sorted(conn.execute(f"SELECT * EXCLUDE (built_at, org) FROM {t} WHERE day = ? AND org = ?",
                                           [day, "default"]).fetchall()
                              if t == "daily_totals" else
                              conn.execute(f"SELECT * EXCLUDE (org) FROM {t} WHERE day = ? AND org = ?",
                                           [day, "default"]).fetchall(), key=repr)
                    for t in SUMMARY_TABLES}


def checks(result: ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()
            if e.asset_key == generations.key}  # the capture's; daily_usage's budget check is test_budgets'/dg dev's


def summarized(result: ExecuteInProcessResult) -> bool:
    return bool(result.asset_materializations_for_node("duckdb__daily_usage"))


def as_int(value: object) -> int:
    """A metadata value known to be a count, narrowed from MetadataValue's wide union."""
    assert isinstance(value, int), value
    return value


def as_float(value: object) -> float:
    assert isinstance(value, float), value
    return value


def details(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The capture's `details` entry: every figure it measured beside the few it charts."""
    value = metadata["details"].value
    assert isinstance(value, dict), value
    return value


def as_text(value: object) -> str:
    """A metadata value known to be text (markdown), narrowed from MetadataValue's wide union."""
    assert isinstance(value, str), value
    return value


@pytest.fixture
def ledger(emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> Ledger:
    return Ledger(emulator, influxd, tmp_path)


ALL_GREEN = {"zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": True}


def test_a_day_end_to_end_then_again_without_duplicates(ledger: Ledger) -> None:
    day = yesterday()
    truth = ledger.truth(day)
    first = ledger.run(day)
    assert first.success and checks(first) == ALL_GREEN and summarized(first)
    assert {e.partition for e in first.get_asset_check_evaluations()} == {f"{day}|default"}  # the run's partition
    counts = ledger.store.day_counts(day)
    assert counts.points == counts.distinct_ids == truth["count"]
    assert ledger.store.ids_by_model(day) == truth["by_model_permaslug"]  # as /generation sent them
    meta = first.asset_materializations_for_node("influxdb__generations")[0].metadata
    assert meta["enumerated"].value == meta["fetched"].value == truth["count"]
    assert details(meta)["written"] == truth["count"] and meta["missing"].value == 0
    assert meta["spend_usd"].value == pytest.approx(truth["cost"], abs=1e-5)  # the day's stored usage
    numbers = {k for k, v in meta.items() if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)}
    assert numbers == set(PLOTTED) - {"share_of_limit", "push_coverage"}, numbers  # no limit met, no push set up
    assert "push" not in details(meta)
    summary = ledger.summary(day)
    assert {row[1]: row[4] for row in summary["daily_usage"]} == truth["by_model_permaslug"]  # model, requests
    assert sum(row[5] for row in summary["daily_usage_by_api_key"]) == truth["count"]

    second = ledger.run(day)
    assert second.success and checks(second) == ALL_GREEN
    again = ledger.store.day_counts(day)
    assert again.points == again.distinct_ids == truth["count"]
    assert ledger.summary(day) == summary


def test_a_run_reads_openrouters_counts_once_and_the_summary_carries_the_days_numbers(ledger: Ledger) -> None:
    """One read of the counts (one /activity call) serves both API checks and the summary; the summary's
    metadata carries the numbers the asset page plots, equal to OpenRouter's truth."""
    day = yesterday() - dt.timedelta(days=1)
    truth = ledger.truth(day)
    ledger.emulator.reset_stats()
    result = ledger.run(day)
    assert result.success and checks(result) == ALL_GREEN
    assert ledger.emulator.stats()["by_path"].get("/activity") == 1
    meta = {k: v.value for k, v in result.asset_materializations_for_node("duckdb__daily_usage")[0].metadata.items()}
    assert meta["requests"] == meta["openrouter_requests"] == truth["count"]
    assert meta["spend_usd"] == pytest.approx(truth["cost"], abs=1e-5)
    assert isinstance(meta["tokens_prompt"], int) and meta["tokens_prompt"] > 0
    assert isinstance(meta["tokens_completion"], int) and meta["tokens_completion"] > 0
    with duckdb.connect(str(ledger.duckdb_path), read_only=True) as conn:
        top = conn.execute("SELECT model FROM daily_usage WHERE day = ? ORDER BY usage DESC LIMIT 1",
                           [day]).fetchall()[0][0]
        api_cost = conn.execute("SELECT api_cost FROM daily_totals WHERE day = ?", [day]).fetchall()[0][0]
    assert f"| {top} |" in as_text(meta["top_models"]).splitlines()[2]  # the first row is the top spender
    assert api_cost == pytest.approx(truth["cost"], abs=1e-6)


def test_the_summary_alone_refuses_a_day_no_check_of_its_run_proved(ledger: Ledger) -> None:
    day = yesterday() - dt.timedelta(days=1)
    alone = define_asset_job("summary_alone", selection=AssetSelection.assets(daily_usage))
    defs = Definitions(assets=[generations, daily_usage], jobs=[alone], resources=ledger.resources)
    result = ledger.run(day, "summary_alone", defs)
    assert not result.success and not summarized(result)
    failure = result.failure_data_for_node("duckdb__daily_usage")
    assert failure is not None and "no passing full_capture_matches_openrouter check in this run" in str(
        failure.error)


def test_generations_with_identical_timestamps_are_all_kept(ledger: Ledger) -> None:
    day = yesterday()
    assert ledger.run(day).success
    frame = pd.concat(list(ledger.store.iter_day_frames(day)))
    same_instant = frame.assign(us=frame["time"] // 1000).groupby(["model", "provider", "us"]).size()
    assert (same_instant > 1).sum() >= 1, "the emulated day must contain same-microsecond generations"
    assert len(frame) == frame["generation_id"].nunique() == ledger.truth(day)["count"]


def test_a_dropped_generation_fails_capture_and_skips_the_summary(ledger: Ledger) -> None:
    day = yesterday() - dt.timedelta(days=1)
    assert ledger.run(day).success
    before = ledger.summary(day)
    row = next(iter(ledger.store.iter_day_frames(day, chunk_size=1))).iloc[0]
    ledger.store.delete_point(row["model"], row["provider"], int(row["time"]))
    assert ledger.store.day_counts(day).points == ledger.truth(day)["count"] - 1

    result = ledger.verify_only(day)
    assert not result.success
    assert checks(result)["full_capture_matches_openrouter"] is False
    assert checks(result)["zero_duplicates"] is True
    assert not summarized(result)
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "full_capture_matches_openrouter")
    assert evaluation.metadata["day"].value == day.isoformat()
    assert row["model"] in as_text(evaluation.metadata["diff"].value)
    assert ledger.summary(day) == before  # the published summary still holds the last good build

    healed = ledger.run(day)  # a rerun re-captures the day: the ledger is whole again
    assert healed.success and checks(healed) == ALL_GREEN


def capture_check(result: ExecuteInProcessResult) -> Any:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "full_capture_matches_openrouter")


@pytest.mark.parametrize("inclusive", [False, True], ids=["end-exclusive", "end-inclusive"])
def test_the_capture_check_holds_on_label_named_analytics_and_either_end_bound(ledger: Ledger, inclusive: bool) -> None:
    """OpenRouter's analytics name models by label, not by the slug /generation records, and may treat the
    end of a time range as inclusive. The check is green on an exact day all the same, and red, with a
    per-model diff, when a record is really missing."""
    emulator = ledger.emulator
    day = yesterday() - dt.timedelta(days=1)
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    emulator.configure(inclusive_end=inclusive, analytics_labels=True)
    try:
        emulator.add_generations(day + dt.timedelta(days=1), 2, at=next_midnight)  # the next day's first µs
        emulator.add_generations(day, 1, at=next_midnight - dt.timedelta(microseconds=1))  # this day's last
        green = ledger.run(day)
        assert green.success and checks(green) == ALL_GREEN
        meta = capture_check(green).metadata
        assert meta["stored_distinct_ids"].value == meta["api_request_count"].value == ledger.truth(day)["count"]
        assert meta["analytics_labels"].value > 0 and meta["activity_checked"].value is True
        generation_meta = green.asset_materializations_for_node("influxdb__generations")[0].metadata
        skipped = as_int(details(generation_meta)["next_day_ids_skipped"])
        assert (skipped >= 2) if inclusive else (skipped == 0)

        row = next(iter(ledger.store.iter_day_frames(day, chunk_size=1))).iloc[0]
        ledger.store.delete_point(row["model"], row["provider"], int(row["time"]))
        red = ledger.verify_only(day)
        assert checks(red)["full_capture_matches_openrouter"] is False and not summarized(red)
        diff = capture_check(red).metadata["diff"].value
        assert f"| {row['model']} |" in diff and "| -1 |" in diff  # the slug, one short of /activity
    finally:
        emulator.reset_config()


def test_a_duplicated_point_fails_the_duplicates_check(ledger: Ledger) -> None:
    day = yesterday()
    assert ledger.run(day).success
    row = next(iter(ledger.store.iter_day_frames(day, chunk_size=1))).iloc[0]
    ledger.store.write_lines([
        f'generations,model={row["model"]},provider=duplicate-injected '
        f'generation_id="{row["generation_id"]}",total_cost=0.0 {int(row["time"]) + 1}'
    ])
    result = ledger.verify_only(day)
    assert checks(result)["zero_duplicates"] is False
    assert not result.success and not summarized(result)
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "zero_duplicates")
    assert evaluation.metadata["duplicate_points"].value == 1


def test_a_late_generation_turns_capture_red_until_the_day_is_rerun(ledger: Ledger) -> None:
    day = yesterday() - dt.timedelta(days=2)
    assert ledger.run(day).success
    requests.post(f"{ledger.emulator.control_url}/generations", json={"date": day.isoformat(), "count": 2},
                  timeout=10).raise_for_status()
    assert checks(ledger.verify_only(day))["full_capture_matches_openrouter"] is False
    rerun = ledger.run(day)
    assert rerun.success and checks(rerun) == ALL_GREEN
    assert ledger.store.day_counts(day).distinct_ids == ledger.truth(day)["count"]


@pytest.mark.slow
def test_a_day_from_an_api_as_hard_as_openrouter_is_exact_and_green(influxd: LocalInfluxd, tmp_path: Path) -> None:
    """200 ms median latency with a long tail, hung record fetches, an account-wide limit of 500
    requests/s whose 429s come partly as a CDN's HTML pages, label-named analytics: through the job."""
    hard = ["--latency-ms", "200", "--hang-share", "0.002", "--hang-seconds", "20", "--rate-limit", "500",
            "--html-error-share", "0.2", "--analytics-labels", "on"]
    with run_emulator(seed=31, generations_per_day=5000, days=1, log_path=tmp_path / "emu.log",
                      extra_args=hard) as emulator:
        ledger = Ledger(emulator, influxd, tmp_path)
        day = yesterday()
        result = ledger.run(day)
        truth = ledger.truth(day)
        stats = emulator.stats()
    assert result.success and checks(result) == ALL_GREEN
    meta = {k: v.value for k, v in result.asset_materializations_for_node("influxdb__generations")[0].metadata.items()}
    more = details(result.asset_materializations_for_node("influxdb__generations")[0].metadata)
    assert meta["enumerated"] == meta["fetched"] == more["written"] == truth["count"] == 5000
    assert stats["rate_limited"] > 0 and stats["hangs"] > 0  # the server really was hard ...
    assert as_int(more["throttled_429"]) > 0 and as_int(more["timed_out_attempts"]) >= stats["hangs"] \
        and meta["missing"] == 0  # ... and met: every hung fetch was cut and tried again
    assert more["limit_rps"] == pytest.approx(500, rel=0.15)  # the limit the pace learned from the 429s ...
    assert meta["share_of_limit"] == pytest.approx(as_float(meta["records_per_second"]) / more["limit_rps"], abs=1e-3)
    assert ledger.store.ids_by_model(day) == truth["by_model_permaslug"]


def test_the_schedule_asks_for_yesterday_of_every_organisation(ledger: Ledger) -> None:
    schedule = ledger.defs.resolve_schedule_def(daily_ledger_schedule.name)
    now = dt.datetime.now(dt.UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    with DagsterInstance.local_temp() as instance:  # as under the daemon: an instance the schedule can reload
        add_organisations(instance, ["default", "acme"])  # one run per organisation of the day just completed
        tick = schedule.evaluate_tick(build_schedule_context(instance=instance, scheduled_execution_time=now))
    yesterday = (now.date() - dt.timedelta(days=1)).isoformat()
    assert sorted(str(r.partition_key) for r in tick.run_requests or []) == [f"{yesterday}|acme",
                                                                             f"{yesterday}|default"]


def test_days_outside_the_generation_window_fail_fast() -> None:
    old = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=40)
    with pytest.raises(Failure, match="31-day window"):
        capturable(OrgDay("default", old).key)


ANALYST = textwrap.dedent("""
    import sys, time, duckdb
    conn = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
    conn.execute("BEGIN TRANSACTION")
    print(conn.execute("SELECT count(*) FROM daily_usage").fetchone()[0], flush=True)
    sys.stdin.readline()   # hold the file open until the test is done
    print(conn.execute("SELECT count(*) FROM daily_usage").fetchone()[0], flush=True)
""")


@pytest.mark.parametrize("mode", ["rw", "ro"])
def test_an_analyst_holding_the_duckdb_file_never_fails_a_run(ledger: Ledger, mode: str) -> None:
    first, second = yesterday() - dt.timedelta(days=1), yesterday()
    assert ledger.run(first).success
    analyst = subprocess.Popen([sys.executable, "-c", ANALYST, str(ledger.duckdb_path), mode],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        rows_seen = int(analyst.stdout.readline())
        assert rows_seen > 0
        result = ledger.run(second)
        assert result.success and summarized(result)
        assert ledger.summary(second)["daily_usage"]  # a new connection sees the new day
        analyst.stdin.write("\n")
        analyst.stdin.flush()
        assert int(analyst.stdout.readline()) == rows_seen  # the held connection still answers
    finally:
        analyst.kill()
        analyst.wait()


def readme_blocks(language: str) -> list[str]:
    """The statements of every `language` block of the README and docs/."""
    root = Path(__file__).resolve().parent.parent
    text = "\n".join(page.read_text() for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    blocks = text.split(f"```{language}\n")[1:]
    return [q.strip() for block in blocks for q in block.split("```")[0].split(";") if q.strip()]


def test_the_readme_queries_run_against_a_real_ledger(ledger: Ledger) -> None:
    day = yesterday()
    assert ledger.run(day).success
    history = ledger.defs.resolve_job_def("usage_history").execute_in_process(instance=ledger.instance)
    assert history.success  # the history's examples read its tables
    today = ledger.defs.resolve_job_def("usage_today").execute_in_process(instance=ledger.instance)
    assert today.success  # its example reads usage_today (empty here: nothing was pushed today)
    influxql = [q for q in readme_blocks("sql") if "FROM generations" in q]
    duck = [q for q in readme_blocks("sql")
            if "FROM generations" not in q and "FROM usage_today" not in q and "FROM daily_budgets" not in q]
    assert len(influxql) == 3 and len(duck) == 6  # README 1 + 3, docs/influxdb.md 2, docs/history.md 3
    (provisional,) = [q for q in readme_blocks("sql") if "FROM usage_today" in q]
    (over_budget,) = [q for q in readme_blocks("sql") if "FROM daily_budgets" in q]  # docs/alerts.md
    with duckdb.connect(str(ledger.duckdb_path), read_only=True) as conn:
        assert isinstance(conn.execute(provisional).fetchall(), list)  # it runs on the published file
        assert conn.execute(over_budget).fetchall() == []  # it runs; no budget is set here (test_budgets, dg dev)
    for query in influxql:
        ledger.store.query(query.replace("2026-11-21T00:00:00Z", f"{day}T00:00:00Z")
                           .replace("2026-11-22T00:00:00Z", f"{day + dt.timedelta(days=1)}T00:00:00Z"))
    with duckdb.connect(str(ledger.duckdb_path), read_only=True) as conn:
        results = [conn.execute(q).fetchall() for q in duck]
    assert all(results), "every README example returns rows for a captured day"
    exact = results[next(i for i, q in enumerate(duck) if "AS exact" in q)]  # org, day, …, exact, capture_status
    assert exact and all(row[0] == "default" for row in exact)
    # exact is claimed for captured days only: on aggregate days both counts are OpenRouter's own
    assert {(row[5], row[4]) for row in exact} == {("complete", True), ("aggregate", None)}


def test_a_wrong_stored_cost_fails_the_cost_check_as_a_warning(ledger: Ledger) -> None:
    day = yesterday()
    assert ledger.run(day).success
    row = next(iter(ledger.store.iter_day_frames(day, chunk_size=1))).iloc[0]
    point = Point("generations").tag("model", row["model"]).field("usage", float(row["usage"]) + 1.25)
    if isinstance(row["provider"], str):
        point = point.tag("provider", row["provider"])
    # Same measurement, tags and time: InfluxDB overwrites that field of the existing point (the upsert).
    ledger.store.write_lines([point.time(int(row["time"]), WritePrecision.NS).to_line_protocol()])
    assert ledger.store.day_counts(day).points == ledger.truth(day)["count"]

    result = ledger.verify_only(day)
    assert checks(result) == {**ALL_GREEN, "cost_matches_openrouter": False}
    assert result.success and summarized(result)  # a warning does not block the summary
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "cost_matches_openrouter")
    assert evaluation.severity.value == "WARN"
    diff = as_text(evaluation.metadata["diff"].value)
    assert row["model"] in diff and "+1.250000" in diff
