"""A failed day is retried hours later, a few times, while OpenRouter can still enumerate it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from dagster import DagsterInstance, build_sensor_context

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.organisations import add_organisations
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.defs.recapture import Attempt, _attempts, days_to_recapture
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OpenRouterResource
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.runs.tags import run_day, run_org
from usage_pipeline_tests.conftest import yesterday

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 20)
HOURS = dt.timedelta(hours=1)


def test_a_failed_day_is_due_only_after_the_delay() -> None:
    failed = [Attempt(DAY, True, NOW - 2 * HOURS)]
    assert days_to_recapture(failed, NOW, retry_after=6 * HOURS) == []
    assert days_to_recapture(failed, NOW + 5 * HOURS, retry_after=6 * HOURS) == [(OrgDay("default", DAY), 2)]


def test_a_day_whose_latest_run_succeeded_is_left_alone() -> None:
    attempts = [Attempt(DAY, True, NOW - 20 * HOURS), Attempt(DAY, False, NOW - 10 * HOURS)]
    assert days_to_recapture(attempts, NOW, retry_after=6 * HOURS) == []


def test_retries_stop_after_the_last_attempt() -> None:
    attempts = [Attempt(DAY, True, NOW - n * 10 * HOURS) for n in range(1, 6)]
    assert days_to_recapture(attempts, NOW, retry_after=6 * HOURS, max_attempts=5) == []
    assert days_to_recapture(attempts, NOW, retry_after=6 * HOURS, max_attempts=6) == [(OrgDay("default", DAY), 6)]


def test_each_organisation_s_days_are_counted_apart() -> None:
    attempts = [Attempt(DAY, True, NOW - n * 10 * HOURS, "acme") for n in range(1, 6)]
    attempts.append(Attempt(DAY, True, NOW - 10 * HOURS, "globex"))
    assert days_to_recapture(attempts, NOW, retry_after=6 * HOURS) == [(OrgDay("globex", DAY), 2)]


def test_a_day_out_of_the_31_day_window_is_not_retried() -> None:
    old = NOW.date() - dt.timedelta(days=32)
    assert days_to_recapture([Attempt(old, True, NOW - 7 * HOURS)], NOW, retry_after=6 * HOURS) == []


def test_backfill_runs_are_recognised_by_their_one_day_range() -> None:
    assert run_day({"dagster/partition": "2026-11-20"}) == DAY
    assert run_day({"dagster/asset_partition_range_start": "2026-11-20",
                    "dagster/asset_partition_range_end": "2026-11-20"}) == DAY
    assert run_day({"dagster/asset_partition_range_start": "2026-11-19",
                    "dagster/asset_partition_range_end": "2026-11-20"}) is None
    assert run_day({"dagster/partition": "2026-11-20|acme"}) == DAY
    assert run_org({"dagster/asset_partition_range_start": "2026-11-20|acme",
                    "dagster/asset_partition_range_end": "2026-11-20|acme"}) == "acme"
    assert run_org({"dagster/partition": "2026-11-20"}) is None


def test_a_real_failed_run_is_found_and_retried_later(emulator: EmulatorProcess, influxd: LocalInfluxd,
                                                      tmp_path: Path) -> None:
    defs = build_defs({  # a key OpenRouter refuses: the run fails at once
        "openrouter": OpenRouterResource(api_key="sk-or-v1-refused", base_url=emulator.base_url),
        "influxdb": InfluxDBResource(url=influxd.url, database="recapture"),
        "usage_db": DailyUsageDatabase(path=str(tmp_path / "usage.duckdb")),
    })
    instance = DagsterInstance.ephemeral()
    add_organisations(instance, ["default"])
    day = yesterday()
    result = defs.resolve_job_def("daily_ledger").execute_in_process(
        partition_key=OrgDay("default", day).key, instance=instance, raise_on_error=False)
    assert not result.success
    context = build_sensor_context(instance=instance)
    now = dt.datetime.now(dt.UTC)
    attempts = list(_attempts(context, now - dt.timedelta(days=1)))
    assert [(a.org, a.day, a.failed) for a in attempts] == [("default", day, True)]
    assert days_to_recapture(attempts, now, retry_after=6 * HOURS) == []
    assert days_to_recapture(attempts, now + 7 * HOURS, retry_after=6 * HOURS) == [(OrgDay("default", day), 2)]
