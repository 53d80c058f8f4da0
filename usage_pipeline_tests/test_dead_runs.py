"""A run whose worker process died releases what it held: the run fails (saying its worker died), its
`openrouter_api` slot is freed, and the automatic retry can start.

The plain part (`usage_pipeline.runs`: which runs are dead, given what their events say and which processes
live), then the same on a real instance without a daemon (the functions, then the thin sensor in defs/). Real
`dagster dev` and `dagster job execute` processes SIGKILLed mid-ingest: test_dead_runs_killed.py."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventLogEntry,
    SkipReason,
    build_sensor_context,
)
from dagster._core.events import EngineEventData
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG, WILL_RETRY_TAG
from dagster._core.test_utils import create_run_for_test

from usage_pipeline.definitions import defs
from usage_pipeline.defs.dead_runs import release_dead_run_workers
from usage_pipeline.defs.summaries import daily_ledger_job
from usage_pipeline.runs.dead import (
    MESSAGE_PREFIX,
    OUR_ASSETS,
    OUR_JOBS,
    OUR_POOLS,
    DeadRun,
    RunProcesses,
    find_dead_runs,
    release_dead_runs,
)
from usage_pipeline.runs.tags import run_day
from usage_pipeline.runs.workers import RUN_WORKER, WorkerProcess, process_alive, worker_processes

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


def claimed_steps(instance: DagsterInstance, run_id: str) -> list[str]:
    """The run's steps holding an `openrouter_api` slot."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return [slot.step_key for slot in info.claimed_slots if slot.run_id == run_id]


def held_in_pool(instance: DagsterInstance, run_id: str) -> bool:
    """The run holds a slot or is still queued in the pool (an assigned pending step counts against its limit)."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return bool(claimed_steps(instance, run_id)) or any(step.run_id == run_id for step in info.pending_steps)


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
        assert not held_in_pool(instance, dead)
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
    assert not held_in_pool(instance, run_id)



def test_the_sensor_releases_a_dead_run_and_says_so(instance: DagsterInstance) -> None:
    """The thin sensor in defs/ calls the same release on the daemon's instance and reports it as its skip reason."""
    idle = release_dead_run_workers(build_sensor_context(instance=instance))
    assert isinstance(idle, SkipReason) and "every in-flight run's worker is alive" in (idle.skip_message or "")
    run_id = _started_run(instance, _dead_pid())
    assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, INGEST_STEP).is_claimed
    result = release_dead_run_workers(build_sensor_context(instance=instance))
    assert isinstance(result, SkipReason)
    assert f"released run {run_id} (daily_ledger 2026-11-20)" in (result.skip_message or "")
    assert "STARTED -> FAILURE; freed slots: openrouter_api x1" in (result.skip_message or "")
    assert not held_in_pool(instance, run_id)


def test_our_runs_are_named_as_the_definitions_name_them() -> None:
    """`usage_pipeline.runs.dead` imports no definitions, so it names this code location's job, assets and pools
    itself: renaming one in defs/ without it would leave that run's dead worker holding its slot forever."""
    assert OUR_JOBS == {daily_ledger_job.name}
    assert OUR_ASSETS == defs.resolve_job_def(daily_ledger_job.name).asset_layer.selected_asset_keys
    pools = {op.pool for job in defs.resolve_all_job_defs() for op in job.graph.iterate_op_defs() if op.pool}
    assert OUR_POOLS == pools


def test_the_day_of_a_run_comes_from_its_partition_tags() -> None:
    assert run_day({"dagster/partition": "2026-11-20"}) == dt.date(2026, 11, 20)
    assert run_day({"dagster/asset_partition_range_start": "2026-11-20",
                    "dagster/asset_partition_range_end": "2026-11-20"}) == dt.date(2026, 11, 20)
    assert run_day({"dagster/asset_partition_range_start": "2026-11-19",
                    "dagster/asset_partition_range_end": "2026-11-20"}) is None  # several days: no one day
    assert run_day({}) is None
