"""A rerun through the daily_ledger job reuses what is stored; run tag usage_pipeline/refresh=true fetches the day
again; a malformed tag fails the run naming it. Counted by the emulator's own request statistics."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from dagster import ExecuteInProcessResult

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.defs.generations import REFRESH_TAG
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.test_pipeline import ALL_GREEN, Ledger, checks


@pytest.fixture
def ledger(emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> Ledger:
    return Ledger(emulator, influxd, tmp_path)


def run(ledger: Ledger, day: dt.date, tags: dict[str, str]) -> tuple[ExecuteInProcessResult, dict[str, Any], int]:
    """The run, its generations metadata and the GET /generation requests it made."""
    ledger.emulator.reset_stats()
    result = ledger.defs.resolve_job_def("daily_ledger").execute_in_process(
        partition_key=OrgDay("default", day).key, instance=ledger.instance, raise_on_error=False, tags=tags)
    materialized = result.asset_materializations_for_node("influxdb__generations")
    meta: dict[str, Any] = {k: v.value for k, v in materialized[0].metadata.items()} if materialized else {}
    meta |= meta.get("details", {})  # the figures kept beside the charted ones (`refresh`)
    return result, meta, int(ledger.emulator.stats()["by_path"].get("/generation", 0))


def test_a_rerun_reuses_the_stored_day_and_the_refresh_tag_fetches_it_again(ledger: Ledger) -> None:
    day = yesterday() - dt.timedelta(days=2)
    count = ledger.truth(day)["count"]
    first, meta, requests = run(ledger, day, {})
    assert first.success and checks(first) == ALL_GREEN
    assert (meta["fetched"], meta["reused"], meta["refresh"]) == (count, 0, False) and requests >= count

    again, meta, requests = run(ledger, day, {REFRESH_TAG: "false"})
    assert again.success and checks(again) == ALL_GREEN
    assert (meta["fetched"], meta["reused"], requests) == (0, count, 0)  # only the enumeration is paid

    refreshed, meta, requests = run(ledger, day, {REFRESH_TAG: "true"})
    assert refreshed.success and checks(refreshed) == ALL_GREEN
    assert (meta["fetched"], meta["reused"], meta["refresh"]) == (count, 0, True) and requests >= count
    counts = ledger.store.day_counts(day)
    assert counts.points == counts.distinct_ids == count  # the same points, rewritten


def test_a_malformed_refresh_tag_fails_the_run_naming_it(ledger: Ledger) -> None:
    result, meta, requests = run(ledger, yesterday(), {REFRESH_TAG: "yes please"})
    assert not result.success and meta == {} and requests == 0
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"run tag {REFRESH_TAG}='yes please': must be true or false" in str(failure.step_failure_data.error)
