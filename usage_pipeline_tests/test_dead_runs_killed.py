"""A real run worker SIGKILLed mid-ingest releases what it held: under `dagster dev` the daemon's sensor fails
the run and frees its `openrouter_api` slot, and run_retries reruns the day at once, exact; a killed
`dagster job execute` (no daemon) is released by `usage-pipeline release-dead-runs`. Slow: real processes,
a day of 15,000 generations. The quick tests of the same logic are in test_dead_runs.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.defs.organisations import add_organisations
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.runs.dead import MESSAGE_PREFIX
from usage_pipeline.runs.workers import WorkerProcess, process_alive, worker_processes
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import REPO, DagsterDev, running
from usage_pipeline_tests.test_dead_runs import INGEST_STEP, claimed_steps, held_in_pool

STARTED, FAILURE = DagsterRunStatus.STARTED, DagsterRunStatus.FAILURE
SUCCESS, CANCELED = DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED


@pytest.fixture(scope="module")
def slow_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A day big and slow enough (15,000 generations, 200 ms each, 600 requests/s) that ingest lasts ~25 s."""
    log = tmp_path_factory.mktemp("slow_emulator") / "emulator.log"
    with run_emulator(seed=23, generations_per_day=15000, days=1, log_path=log,
                      extra_args=["--latency-ms", "200", "--rate-limit", "600"]) as server:
        yield server


def _wait(what: str, timeout_s: float, probe: Callable[[], object], every_s: float = 0.5) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def _ingest_running(instance: DagsterInstance, run_id: str) -> bool:
    current = instance.get_run_by_id(run_id)
    assert current is None or current.status not in (FAILURE, SUCCESS, CANCELED), current and current.status
    return bool(current and current.status == STARTED and any(
        e.step_key == INGEST_STEP for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)))


def _fetched(server: EmulatorProcess) -> int:
    """Records the emulator has answered since the test began: the ingest is under way."""
    return int(server.stats()["by_path"].get("/generation", 0))


def _messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.message or (e.dagster_event.message if e.dagster_event else "") or "" for e in instance.all_logs(run_id)]


def _launch_day(server: DagsterDev, day: dt.date) -> str:
    repo = server.graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    node = repo["repositoriesOrError"]["nodes"][0]
    launched = server.graphql("""mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {"params": {"selector": {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"],
                                 "jobName": "daily_ledger"},
                    "executionMetadata": {"tags": [{"key": key, "value": value}
                                                   for key, value in OrgDay("default", day).tags.items()]}}})
    result = launched["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


@pytest.mark.slow
def test_dagster_dev_a_killed_run_worker_releases_its_slot_and_the_day_reruns_exact(
        slow_emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> None:
    day = yesterday()
    truth = slow_emulator.truth(day)["count"]
    with running([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"], slow_emulator, influxd,
                 tmp_path) as server:
        with DagsterInstance.from_config(str(server.home)) as instance:
            add_organisations(instance, ["default"])  # as the daemon's sensor does, without waiting for it
            slow_emulator.reset_stats()
            run_id = _launch_day(server, day)
            _wait("the ingest step to start", 180, lambda: _ingest_running(instance, run_id))
            _wait("records to be fetched", 120, lambda: _fetched(slow_emulator) > 1000)  # mid-ingest
            run_worker, step_workers = worker_processes(instance.all_logs(run_id))
            assert run_worker and process_alive(run_worker)
            assert claimed_steps(instance, run_id) == [INGEST_STEP]
            os.kill(run_worker.pid, signal.SIGKILL)
            killed_at = time.time()

            def failed() -> bool:
                current = instance.get_run_by_id(run_id)
                return bool(current and current.status == FAILURE)

            _wait("the killed run to fail", 60, failed)
            failed_after = time.time() - killed_at
            _wait("its slot to be freed", 60 - failed_after, lambda: not held_in_pool(instance, run_id))
            freed_after = time.time() - killed_at
            messages = _messages(instance, run_id)
            assert any(m.startswith(MESSAGE_PREFIX) and f"pid {run_worker.pid}" in m for m in messages), messages
            assert not any(process_alive(w) for w in step_workers)  # the orphaned ingest subprocess is stopped

            def next_run() -> str | None:
                for record in instance.get_run_records(RunsFilter(tags=OrgDay("default", day).tags)):
                    if record.dagster_run.run_id != run_id and record.start_time:
                        return record.dagster_run.run_id
                return None

            retry_id = str(_wait("the next run of the day to start", 90, next_run))
            [retry] = instance.get_run_records(RunsFilter(run_ids=[retry_id]))
            assert retry.start_time
            started_after = retry.start_time - killed_at
            assert retry.dagster_run.parent_run_id == run_id  # run_retries' automatic retry

            def finished() -> DagsterRunStatus | None:
                current = instance.get_run_by_id(retry_id)
                return current.status if current and current.status in (SUCCESS, FAILURE, CANCELED) else None

            status = _wait("the rerun to finish", 300, finished, every_s=1)
            succeeded_after = time.time() - killed_at
            assert status == SUCCESS, _messages(instance, retry_id)[-20:]
            evaluations = [e.dagster_event.event_specific_data for e in instance.all_logs(
                retry_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION) if e.dagster_event]
            assert {e.check_name: e.passed for e in evaluations} == {
                "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": True,
                "spend_within_budgets": True}  # daily_usage's, no budget set
            print(f"\nkill -> run FAILURE {failed_after:.1f} s, -> slot freed {freed_after:.1f} s, -> next run "
                  f"started {started_after:.1f} s, -> next run succeeded {succeeded_after:.1f} s")
        store = InfluxStore(InfluxSettings(url=server.env["INFLUXDB_URL"], database=server.env["INFLUXDB_DATABASE"]))
        counts = store.day_counts(day)
        assert counts.points == counts.distinct_ids == truth


@pytest.mark.slow
def test_a_killed_dagster_job_execute_is_released_by_the_cli(slow_emulator: EmulatorProcess, influxd: LocalInfluxd,
                                                            tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "OPENROUTER_API_KEY": slow_emulator.management_key,
           "OPENROUTER_BASE_URL": slow_emulator.base_url, "INFLUXDB_URL": influxd.url,
           "INFLUXDB_DATABASE": f"cli_{uuid.uuid4().hex[:8]}", "USAGE_DUCKDB_PATH": str(tmp_path / "usage.duckdb")}
    day = yesterday().isoformat()
    with DagsterInstance.from_config(str(home)) as instance:
        add_organisations(instance, ["default"])
    slow_emulator.reset_stats()
    with open(tmp_path / "job.log", "w") as log:
        job = subprocess.Popen([sys.executable, "-m", "dagster", "job", "execute", "-m", "usage_pipeline.definitions",
                                "-j", "daily_ledger", "--tags",
                                json.dumps(OrgDay("default", dt.date.fromisoformat(day)).tags)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    step_workers: tuple[WorkerProcess, ...] = ()
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            def started_run() -> str | None:
                assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
                runs = instance.get_runs()
                return runs[0].run_id if runs and _ingest_running(instance, runs[0].run_id) else None

            run_id = str(_wait("the ingest step to start", 180, started_run))
            _wait("records to be fetched", 120, lambda: _fetched(slow_emulator) > 1000)  # mid-ingest
            run_worker, step_workers = worker_processes(instance.all_logs(run_id))
            assert run_worker and run_worker.pid == job.pid  # the RUN_START pid is the CLI process
            os.kill(job.pid, signal.SIGKILL)
            job.wait()
            stuck = instance.get_run_by_id(run_id)
            assert stuck and stuck.status == STARTED  # nothing else notices without a daemon
            assert claimed_steps(instance, run_id) == [INGEST_STEP]
            assert any(process_alive(w) for w in step_workers)  # the ingest subprocess is orphaned, still running

            out = subprocess.run([sys.executable, "-m", "usage_pipeline.cli", "release-dead-runs"], env=env, cwd=REPO,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr[-3000:]
            print("\n" + out.stdout)
            assert f"released run {run_id} (daily_ledger {day}): run worker pid {job.pid} is gone" in out.stdout
            assert "STARTED -> FAILURE; freed slots: openrouter_api x1; stopped orphaned step workers" in out.stdout
            released = instance.get_run_by_id(run_id)
            assert released and released.status == FAILURE
            assert any(m.startswith(MESSAGE_PREFIX) for m in _messages(instance, run_id))
            assert not held_in_pool(instance, run_id)
            assert not any(process_alive(w) for w in step_workers)
            again = subprocess.run([sys.executable, "-m", "usage_pipeline.cli", "release-dead-runs"], env=env, cwd=REPO,
                                   capture_output=True, text=True, timeout=120)
            assert again.returncode == 0 and again.stdout.startswith("no dead runs"), again.stdout + again.stderr
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for w in step_workers:
            if process_alive(w):
                os.kill(w.pid, signal.SIGKILL)
