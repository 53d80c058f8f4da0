"""Two organisations behind a real `dagster dev`: their YAML file, a backfill of organisations x days launched
as the UI launches it, and what the runs it made show (one per organisation-day, their checks, their times).

Each organisation is its own emulator process with its own management key, so a key sent to the other
organisation's requests is refused (401) and a count read with the wrong key cannot match.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance, RunsFilter

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.runs.tags import run_day, run_org
from usage_pipeline_tests.dagster_dev import DagsterDev

ASSETS = [{"path": ["influxdb", "generations"]}, {"path": ["duckdb", "daily_usage"]}]
CAPTURE_KEY = AssetKey(["influxdb", "generations"])  # `checks` below are its; daily_usage's budget check is apart
GREEN = {"zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": True}


@contextmanager
def second_organisation(root: Path, seed: int = 11, key: str = "globex-management-key") -> Iterator[EmulatorProcess]:
    """Another organisation's OpenRouter: other generations (another seed), another management key."""
    with run_emulator(seed=seed, generations_per_day=1200, days=3, log_path=root / "globex.log",
                      extra_args=["--analytics-rpm", "0", "--management-key", key]) as server:
        yield server


def organisations_env(orgs: Mapping[str, EmulatorProcess], root: Path,
                      budgets: Mapping[str, str] | None = None) -> dict[str, str]:
    """USAGE_ORGANISATIONS naming a file of `orgs`, each key in its own variable; no OPENROUTER_API_KEY.
    `budgets` gives an organisation's `budgets` field, as YAML flow text."""
    lines = ["organisations:"]
    env = {"OPENROUTER_API_KEY": "", "OPENROUTER_BASE_URL": ""}
    for name, server in orgs.items():
        variable = f"{name.upper()}_OPENROUTER_KEY"
        lines += [f"  - name: {name}", f"    key_variable: {variable}", f"    base_url: {server.base_url}"]
        if budgets and name in budgets:
            lines.append(f"    budgets: {budgets[name]}")
        env[variable] = server.management_key
    path = root / "organisations.yaml"
    path.write_text("\n".join(lines) + "\n")
    return {**env, "USAGE_ORGANISATIONS": str(path)}


def wait_for_organisations(server: DagsterDev, names: list[str], timeout_s: float = 120) -> None:
    """Until the daemon's organisations_from_config sensor has made every name an `org` partition."""
    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(server.home)) as instance:
        while set(names) - set(instance.get_dynamic_partitions("organisations")):
            assert time.monotonic() < deadline, f"no org partitions {names} after {timeout_s} s: {server.log_path}"
            time.sleep(1)


def launch_backfill(server: DagsterDev, partitions: list[str]) -> str:
    launched = server.graphql("""
        mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"params": {"partitionNames": partitions, "assetSelection": ASSETS}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def wait_for_backfill(server: DagsterDev, backfill_id: str, runs: int, timeout_s: float = 480) -> list[str]:
    """Until the backfill has made `runs` runs and each has ended; their statuses. (Dagster marks the backfill
    itself done only at its daemon's next 30 s iteration, which would tell these tests nothing more.)"""
    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(server.home)) as instance:
        while time.monotonic() < deadline:
            made = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            if len(made) >= runs and all(run.is_finished for run in made):
                return sorted(run.status.value for run in made)
            time.sleep(1)
    raise AssertionError(f"backfill {backfill_id}: {runs} runs not all ended after {timeout_s} s")


@dataclass(frozen=True)
class SeenRun:
    """One run of the backfill: its organisation-day, outcome, check results, span and its steps' processes."""

    org: str
    day: str
    status: str
    checks: dict[str, bool]
    check_days: set[str]
    check_orgs: set[str]
    started: float
    ended: float
    step_pids: set[int]
    step_pids_by_key: dict[str, set[int]]  # the processes each step started in (a retried step: more than one)


def backfill_runs(server: DagsterDev, backfill_id: str) -> dict[tuple[str, str], SeenRun]:
    """The backfill's runs by (organisation, day)."""
    seen: dict[tuple[str, str], SeenRun] = {}
    with DagsterInstance.from_config(str(server.home)) as instance:
        for record in instance.get_run_records():
            run = record.dagster_run
            if run.tags.get("dagster/backfill") != backfill_id:
                continue
            evaluations = [e.dagster_event.event_specific_data for e in
                           instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
                           if e.dagster_event is not None
                           and e.dagster_event.event_specific_data.asset_key == CAPTURE_KEY]  # the capture's checks
            steps = [e for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
                     if e.dagster_event is not None]
            by_key: dict[str, set[int]] = {}
            for e in steps:
                if e.dagster_event and e.dagster_event.step_key and e.dagster_event.pid:
                    by_key.setdefault(e.dagster_event.step_key, set()).add(e.dagster_event.pid)
            org, day = run_org(run.tags), run_day(run.tags)
            assert org and day, run.tags
            key = (org, day.isoformat())
            assert key not in seen, f"two runs of {key}"  # one run per organisation-day
            seen[key] = SeenRun(
                org, day.isoformat(), run.status.value, {e.check_name: e.passed for e in evaluations},
                {str(e.metadata["day"].value) for e in evaluations},
                {str(e.metadata["organisation"].value) for e in evaluations},
                record.start_time or 0.0, record.end_time or 0.0,
                set().union(*by_key.values()), by_key)
    return seen


def keys(orgs: list[str], days: list[dt.date]) -> list[str]:
    """The multi-partition keys of every organisation's days, as the UI sends them (`day|org`)."""
    return [f"{day.isoformat()}|{org}" for org in orgs for day in days]


def one_run_per_organisation_at_a_time(runs: Mapping[tuple[str, str], SeenRun]) -> None:
    """No two runs of one organisation overlapped (the run queue's limit on dagster/partition/org)."""
    by_org: dict[str, list[SeenRun]] = {}
    for run in runs.values():
        by_org.setdefault(run.org, []).append(run)
    for org, org_runs in by_org.items():
        spans = sorted((r.started, r.ended) for r in org_runs)
        for (_, first_end), (second_start, _) in zip(spans, spans[1:], strict=False):
            assert second_start >= first_end, f"{org}: two runs at once {spans}"
