"""A run whose worker process is killed releases what it held: the run fails (saying its worker died), its
`openrouter_api` slot is freed, and the day runs again at once, exact.

The pure part (which runs are dead, given what their events say and which processes live) and a real
instance without a daemon are tested quickly; a real `dagster dev` and a real `dagster job execute` are
SIGKILLed mid-ingest in the slow tests."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus, EventLogEntry, RunsFilter
from dagster._core.events import EngineEventData
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG, WILL_RETRY_TAG
from dagster._core.test_utils import create_run_for_test

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.defs.dead_runs import (
    MESSAGE_PREFIX,
    RUN_WORKER,
    DeadRun,
    RunProcesses,
    WorkerProcess,
    find_dead_runs,
    process_alive,
    release_dead_runs,
    worker_processes,
)
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import REPO, DagsterDev, running

POOL = "openrouter_api"
INGEST_STEP = "influxdb__generations"
STARTED, STARTING, CANCELING = DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING
FAILURE, SUCCESS, CANCELED = DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED


# --- which runs are dead: pure ------------------------------------------------------------------------------

def worker(pid: int, role: str = RUN_WORKER) -> WorkerProcess:
    return WorkerProcess(pid, 1000.0, role)


def alive_only(*pids: int) -> Callable[[WorkerProcess], bool]:
    return lambda w: w.pid in pids


def run(status: DagsterRunStatus, run_worker: WorkerProcess | None = None, *steps: WorkerProcess,
        holds_slots: bool = False, run_id: str = "r1") -> RunProcesses:
    return RunProcesses(run_id, "daily_ledger", status, run_worker, tuple(steps), holds_slots)


def test_an_in_flight_run_whose_worker_is_gone_is_dead() -> None:
    started = run(STARTED, worker(10), holds_slots=True)
    assert find_dead_runs([started], alive_only()) == [DeadRun(started)]
    assert find_dead_runs([started], alive_only(10)) == []
    assert find_dead_runs([started], alive_only())[0].action == "fail"


def test_its_step_subprocesses_that_still_run_are_orphans_to_stop() -> None:
    ingest, checks = worker(11, INGEST_STEP), worker(12, "zero_duplicates")
    started = run(STARTED, worker(10), ingest, checks, holds_slots=True)
    assert find_dead_runs([started], alive_only(11)) == [DeadRun(started, (ingest,))]
    assert find_dead_runs([started], alive_only(10, 11)) == []  # the run worker lives: nothing is orphaned


def test_a_canceling_run_with_a_dead_worker_is_canceled_and_starting_without_a_worker_is_left_alone() -> None:
    assert find_dead_runs([run(CANCELING, worker(10))], alive_only())[0].action == "cancel"
    assert find_dead_runs([run(STARTING, worker(10))], alive_only())[0].action == "fail"
    assert find_dead_runs([run(STARTING, None), run(STARTED, None)], alive_only()) == []  # nothing known yet


def test_a_finished_run_still_holding_a_slot_is_freed_once_its_worker_is_gone() -> None:
    failed = run(FAILURE, worker(10), worker(11, INGEST_STEP), holds_slots=True)
    assert find_dead_runs([failed], alive_only(11)) == [DeadRun(failed, (worker(11, INGEST_STEP),))]
    assert find_dead_runs([failed], alive_only(11))[0].action == "free"
    assert find_dead_runs([failed], alive_only(10)) == []  # still shutting down: it frees its own slots
    assert find_dead_runs([run(SUCCESS, worker(10)), run(CANCELED, None)], alive_only()) == []  # holds nothing
    assert find_dead_runs([run(DagsterRunStatus.QUEUED, None, holds_slots=True)], alive_only()) == []


def _entry(event_type: DagsterEventType, *, pid: int | None = None, message: str = "",
           step_key: str | None = None, metadata_pid: int | None = None, at: float = 1000.0) -> EventLogEntry:
    data = EngineEventData.in_process(metadata_pid) if metadata_pid is not None else (
        EngineEventData() if event_type != DagsterEventType.RUN_START else None)
    event = DagsterEvent(event_type_value=event_type.value, job_name="daily_ledger", message=message, pid=pid,
                         step_key=step_key, event_specific_data=data)
    return EventLogEntry(error_info=None, level=logging.DEBUG, user_message=message, run_id="r1", timestamp=at,
                         step_key=step_key, job_name="daily_ledger", dagster_event=event)


def test_worker_pids_come_from_dagsters_own_events() -> None:
    launched = [  # DefaultRunLauncher: the code server's run worker says so, then starts the run and a step
        _entry(DagsterEventType.ENGINE_EVENT, message="Started process for run (pid: 4239).", metadata_pid=4239,
               at=1.0),
        _entry(DagsterEventType.RUN_START, pid=4239, at=2.0),
        _entry(DagsterEventType.ENGINE_EVENT, pid=4239, metadata_pid=4239, at=2.1,
               message="Executing steps using multiprocess executor: parent process (pid: 4239)"),
        _entry(DagsterEventType.STEP_WORKER_STARTED, pid=4267, step_key=INGEST_STEP, metadata_pid=4267, at=3.0),
    ]
    assert worker_processes(launched) == (WorkerProcess(4239, 2.0), (WorkerProcess(4267, 3.0, INGEST_STEP),))
    # `dagster job execute` / `execute_in_process`: no "Started process" event, the RUN_START pid is the worker
    assert worker_processes([_entry(DagsterEventType.RUN_START, pid=77, at=5.0)]) == (WorkerProcess(77, 5.0), ())
    assert worker_processes([_entry(DagsterEventType.ENGINE_EVENT, message="Retrying the run")]) == (None, ())


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_process_alive_knows_dead_zombie_and_reused_pids() -> None:
    me = psutil.Process()
    assert process_alive(WorkerProcess(os.getpid(), time.time()))
    assert not process_alive(WorkerProcess(_dead_pid(), time.time()))
    # the pid was named an hour before this process started: a reuse, the named worker is gone
    assert not process_alive(WorkerProcess(os.getpid(), me.create_time() - 3600))
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not process_alive(WorkerProcess(zombie.pid, time.time()))
    finally:
        zombie.wait()


# --- a real instance, no daemon -------------------------------------------------------------------------------

@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.local_temp(str(tmp_path), overrides={
        "concurrency": {"pools": {"granularity": "op", "default_limit": 1}},
        "run_retries": {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False},
    }) as temp:
        temp.event_log_storage.set_concurrency_slots(POOL, 1)
        yield temp


def _started_run(instance: DagsterInstance, pid: int, *, status: DagsterRunStatus = STARTED,
                 tags: dict[str, str] | None = None) -> str:
    run_id = create_run_for_test(instance, job_name="daily_ledger", status=status,
                                 tags={"dagster/partition": "2026-11-20", **(tags or {})}).run_id
    instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.ENGINE_EVENT.value,
                                               job_name="daily_ledger",
                                               message=f"Started process for run (pid: {pid}).",
                                               event_specific_data=EngineEventData.in_process(pid)), run_id)
    return run_id


def _claimed(instance: DagsterInstance, run_id: str) -> list[str]:
    """The run's steps holding an `openrouter_api` slot."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return [slot.step_key for slot in info.claimed_slots if slot.run_id == run_id]


def _held(instance: DagsterInstance, run_id: str) -> bool:
    """The run holds a slot or is still queued in the pool (an assigned pending step counts against its limit)."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return bool(_claimed(instance, run_id)) or any(step.run_id == run_id for step in info.pending_steps)


def test_release_fails_the_dead_run_frees_its_slot_stops_its_orphan_and_leaves_live_runs(
        instance: DagsterInstance) -> None:
    dead = _started_run(instance, _dead_pid())
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.2)
        instance.report_dagster_event(DagsterEvent(
            event_type_value=DagsterEventType.STEP_WORKER_STARTED.value, job_name="daily_ledger", step_key=INGEST_STEP,
            message=f'Executing step "{INGEST_STEP}" in subprocess.', pid=orphan.pid,
            event_specific_data=EngineEventData(metadata={"pid": str(orphan.pid)})), dead)
        assert instance.event_log_storage.claim_concurrency_slot(POOL, dead, INGEST_STEP).is_claimed
        live = _started_run(instance, os.getpid())
        canceling = _started_run(instance, _dead_pid(), status=CANCELING)

        released = {r.run_id: r for r in release_dead_runs(instance)}

        assert set(released) == {dead, canceling}
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        failed = instance.get_run_by_id(dead)
        assert failed and failed.status == FAILURE
        assert failed.tags[RUN_FAILURE_REASON_TAG] == "UNEXPECTED_TERMINATION"  # not a step failure:
        assert failed.tags[WILL_RETRY_TAG] == "true"  # run_retries reruns it at once
        assert not _held(instance, dead)
        assert released[dead].freed == {POOL: 1} and released[dead].stopped == (orphan.pid,)
        assert released[dead].day == "2026-11-20" and "-> FAILURE" in released[dead].describe()
        failure = instance.all_logs(dead, of_type=DagsterEventType.RUN_FAILURE)[-1]
        assert failure.dagster_event and (failure.dagster_event.message or "").startswith(MESSAGE_PREFIX)
        assert "openrouter_api x1" in (failure.dagster_event.message or "")
        assert (instance.get_run_by_id(canceling) or failed).status == CANCELED
        assert (instance.get_run_by_id(live) or failed).status == STARTED  # its worker (this process) lives
        assert release_dead_runs(instance) == []  # nothing left; idempotent
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_a_failed_run_still_holding_a_slot_is_freed_without_a_second_failure(instance: DagsterInstance) -> None:
    run_id = _started_run(instance, _dead_pid())
    assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, INGEST_STEP).is_claimed
    failed_run = instance.get_run_by_id(run_id)
    assert failed_run
    instance.report_run_failed(failed_run)  # what the code server does when its run worker child dies
    [released] = release_dead_runs(instance)
    assert (released.status_before, released.status_after, released.freed) == (FAILURE, FAILURE, {POOL: 1})
    assert len(instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)) == 1
    assert not _held(instance, run_id)


# --- real processes, SIGKILLed mid-ingest ---------------------------------------------------------------------

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
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day.isoformat()}]}}})
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
        run_id = _launch_day(server, day)
        with DagsterInstance.from_config(str(server.home)) as instance:
            _wait("the ingest step to start", 180, lambda: _ingest_running(instance, run_id))
            time.sleep(3)  # mid-ingest: fetching and writing
            run_worker, step_workers = worker_processes(instance.all_logs(run_id))
            assert run_worker and process_alive(run_worker)
            assert _claimed(instance, run_id) == [INGEST_STEP]
            os.kill(run_worker.pid, signal.SIGKILL)
            killed_at = time.time()

            def failed() -> bool:
                current = instance.get_run_by_id(run_id)
                return bool(current and current.status == FAILURE)

            _wait("the killed run to fail", 60, failed)
            failed_after = time.time() - killed_at
            _wait("its slot to be freed", 60 - failed_after, lambda: not _held(instance, run_id))
            freed_after = time.time() - killed_at
            messages = _messages(instance, run_id)
            assert any(m.startswith(MESSAGE_PREFIX) and f"pid {run_worker.pid}" in m for m in messages), messages
            assert not any(process_alive(w) for w in step_workers)  # the orphaned ingest subprocess is stopped

            def next_run() -> str | None:
                for record in instance.get_run_records(RunsFilter(tags={"dagster/partition": day.isoformat()})):
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
                "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": True}
            print(f"\nkill -> run FAILURE {failed_after:.1f} s, -> slot freed {freed_after:.1f} s, -> next run "
                  f"started {started_after:.1f} s, -> next run succeeded {succeeded_after:.1f} s")
            assert started_after < 60, started_after
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
    with open(tmp_path / "job.log", "w") as log:
        job = subprocess.Popen([sys.executable, "-m", "dagster", "job", "execute", "-m", "usage_pipeline.definitions",
                                "-j", "daily_ledger", "--tags", json.dumps({"dagster/partition": day})],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    step_workers: tuple[WorkerProcess, ...] = ()
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            def started_run() -> str | None:
                assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
                runs = instance.get_runs()
                return runs[0].run_id if runs and _ingest_running(instance, runs[0].run_id) else None

            run_id = str(_wait("the ingest step to start", 180, started_run))
            time.sleep(3)
            run_worker, step_workers = worker_processes(instance.all_logs(run_id))
            assert run_worker and run_worker.pid == job.pid  # the RUN_START pid is the CLI process
            os.kill(job.pid, signal.SIGKILL)
            job.wait()
            time.sleep(2)
            stuck = instance.get_run_by_id(run_id)
            assert stuck and stuck.status == STARTED  # nothing else notices without a daemon
            assert _claimed(instance, run_id) == [INGEST_STEP]
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
            assert not _held(instance, run_id)
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
