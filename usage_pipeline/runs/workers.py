"""The processes Dagster says work for a run, and whether each is still that process on this host.

Dagster records the pids itself: "Started process for run (pid: N)" (the `dagster api execute_run` /
code-server run worker), the `pid` of the RUN_START event (every way of executing a run: also `dagster job
execute`, `dagster asset materialize`, `execute_in_process`) and STEP_WORKER_STARTED (each step subprocess of
the multiprocess executor). A pid counts as that worker only if the live process started no later than the
event that named it: a newer process with the same pid is a reuse, and the worker is dead.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dagster import DagsterEventType, EventLogEntry

RUN_WORKER = "run worker"
# A process that started this long after the event naming its pid is a different process (pid reuse).
# Covers the coarse clock of process start times (psutil derives them from boot time + clock ticks).
PID_REUSE_SLACK_S = 5.0


@dataclass(frozen=True)
class WorkerProcess:
    """A process Dagster said was working for a run: its pid, and when Dagster said so."""

    pid: int
    reported_at: float  # unix time of the event that named the pid
    role: str = RUN_WORKER  # RUN_WORKER, or the step key of a step subprocess


def worker_processes(entries: Iterable[EventLogEntry]) -> tuple[WorkerProcess | None, tuple[WorkerProcess, ...]]:
    """The run worker and the step subprocesses named by a run's events (the latest naming wins)."""
    run_worker: WorkerProcess | None = None
    steps: dict[str, WorkerProcess] = {}
    for entry in entries:
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.RUN_START and event.pid:
            run_worker = WorkerProcess(event.pid, entry.timestamp)
        elif (event.event_type == DagsterEventType.ENGINE_EVENT
              and (event.message or "").startswith("Started process for")):
            pid = _metadata_pid(event.event_specific_data) or event.pid
            if pid:
                run_worker = WorkerProcess(pid, entry.timestamp)
        elif event.event_type == DagsterEventType.STEP_WORKER_STARTED and event.step_key:
            pid = _metadata_pid(event.event_specific_data) or event.pid
            if pid:
                steps[event.step_key] = WorkerProcess(pid, entry.timestamp, event.step_key)
    return run_worker, tuple(steps.values())


def _metadata_pid(data: object) -> int | None:
    """The `pid` metadata entry of an engine event's data (a MetadataValue or a plain value), if any."""
    value = getattr(data, "metadata", {}).get("pid") if data is not None else None
    text = getattr(value, "value", value)
    try:
        return int(text) if text is not None else None
    except (TypeError, ValueError):
        return None


def process_alive(worker: WorkerProcess) -> bool:
    """True if `worker.pid` runs on this host and is the process Dagster named (not a later reuse)."""
    try:
        import psutil
    except ImportError:  # without psutil: existence only, no pid-reuse check
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        process = psutil.Process(worker.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= worker.reported_at + PID_REUSE_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def stop_process(worker: WorkerProcess, *, is_alive: Callable[[WorkerProcess], bool] = process_alive,
                 timeout_s: float = 10.0) -> bool:
    """SIGKILL an orphaned step subprocess (after checking it is still that process); True once it is gone."""
    if not is_alive(worker):
        return True
    try:
        os.kill(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(worker):
            return True
        time.sleep(0.05)
    return False
