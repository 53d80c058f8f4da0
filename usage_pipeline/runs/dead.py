"""Release runs whose run worker process died without reporting (SIGKILL, the OOM killer, a host restart).

Such a run holds its `openrouter_api` pool slot forever, so the next run of the day never leaves the
queue. Dagster's run monitoring cannot notice: it asks the run launcher for the worker's health, and the
DefaultRunLauncher that `dagster dev` and this project use does not support that
(`supports_check_run_worker_health` is False; only `max_runtime_seconds` would ever end the run). And
marking a run failed does not free its slots: only the run worker itself, `dagster run delete`, the UI's
"free concurrency slots" button or `run_monitoring.free_slots_after_run_end_seconds` do.

Runs of this project execute on this host, so a worker's pid tells whether it is alive (`workers`).
`release_dead_runs` marks such a run failed (CANCELING: canceled) with a message saying its worker died,
stops step subprocesses it orphaned (they would keep writing outside the pool's limit), and frees its
pool slots. A run that Dagster already marked failed (the code server notices its own dead child) but
that still holds a slot is freed the same way. Under the daemon the `release_dead_run_workers` sensor
(`usage_pipeline.defs.dead_runs`) calls it; without a daemon, `usage-pipeline release-dead-runs`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.events import EngineEventData, JobFailureData, RunFailureReason

from usage_pipeline.runs.tags import run_day
from usage_pipeline.runs.workers import WorkerProcess, process_alive, stop_process, worker_processes

IN_FLIGHT = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
MESSAGE_PREFIX = "Run worker died"
# This code location's runs, by name: the module knows no definitions (so it imports none), and a test holds
# these names to `usage_pipeline.definitions` (the daily_ledger job, its assets, every pool an op uses).
OUR_JOBS = frozenset({"daily_ledger"})
OUR_ASSETS = frozenset({AssetKey(["influxdb", "generations"]), AssetKey(["duckdb", "daily_usage"])})
OUR_POOLS = frozenset({"openrouter_api", "duckdb_writer"})


@dataclass(frozen=True)
class RunProcesses:
    """What is known about one run: its status, its workers, whether it holds pool slots."""

    run_id: str
    job_name: str
    status: DagsterRunStatus
    run_worker: WorkerProcess | None
    step_workers: tuple[WorkerProcess, ...] = ()
    holds_slots: bool = False


@dataclass(frozen=True)
class DeadRun:
    """A run whose worker is gone; `orphans` are its step subprocesses that still run."""

    run: RunProcesses
    orphans: tuple[WorkerProcess, ...] = ()

    @property
    def action(self) -> str:
        """What releasing it does: "cancel" a CANCELING run, "fail" another in-flight one, "free" a finished one."""
        if self.run.status == DagsterRunStatus.CANCELING:
            return "cancel"
        return "fail" if self.run.status in IN_FLIGHT else "free"


@dataclass(frozen=True)
class ReleasedRun:
    """What releasing one dead run did, for the sensor's log and the CLI's output."""

    run_id: str
    job_name: str
    day: str | None
    status_before: DagsterRunStatus
    status_after: DagsterRunStatus
    worker_pid: int | None
    freed: Mapping[str, int] = field(default_factory=dict)  # pool -> claimed slots freed
    stopped: tuple[int, ...] = ()  # orphaned step subprocesses stopped
    message: str = ""

    def describe(self) -> str:
        day = f" {self.day}" if self.day else ""
        worker = f"run worker pid {self.worker_pid} is gone" if self.worker_pid else "no live run worker"
        change = (f"{self.status_before.value} -> {self.status_after.value}"
                  if self.status_after != self.status_before else f"already {self.status_after.value}")
        freed = ", ".join(f"{pool} x{n}" for pool, n in sorted(self.freed.items())) or "none held"
        text = f"run {self.run_id} ({self.job_name}{day}): {worker}; {change}; freed slots: {freed}"
        if self.stopped:
            text += f"; stopped orphaned step workers: {', '.join(map(str, self.stopped))}"
        return text


def find_dead_runs(runs: Iterable[RunProcesses], is_alive: Callable[[WorkerProcess], bool]) -> list[DeadRun]:
    """Runs to release: in flight with a dead run worker, or finished but still holding pool slots with no
    live run worker. A run whose worker is unknown (still STARTING, nothing reported yet) is left alone."""
    dead = []
    for run in runs:
        if run.status in IN_FLIGHT:
            if run.run_worker is None or is_alive(run.run_worker):
                continue
        elif run.status in FINISHED and run.holds_slots:
            if run.run_worker is not None and is_alive(run.run_worker):
                continue  # still shutting down; it frees its own slots
        else:
            continue
        dead.append(DeadRun(run, tuple(w for w in run.step_workers if is_alive(w))))
    return dead


def runs_are_local(instance: DagsterInstance) -> bool:
    """True when this instance launches runs as processes on this host (the DefaultRunLauncher), so the pids in
    their events are this host's. With a container or cluster launcher a pid names nothing here; run
    monitoring checks those workers itself (`supports_check_run_worker_health`)."""
    from dagster._core.launcher import DefaultRunLauncher

    return isinstance(instance.run_launcher, DefaultRunLauncher)


def dead_runs(instance: DagsterInstance, *, is_alive: Callable[[WorkerProcess], bool] = process_alive) -> list[DeadRun]:
    """This instance's runs (of this code location, or holding its pools) whose worker is gone."""
    return _scan(instance, is_alive)[0]


def release_dead_runs(instance: DagsterInstance, *, is_alive: Callable[[WorkerProcess], bool] = process_alive,
                      stop: Callable[[WorkerProcess], bool] | None = None) -> list[ReleasedRun]:
    """Release every dead run (see the module docstring) and say what was done."""
    stop = stop or (lambda worker: stop_process(worker, is_alive=is_alive))
    dead, held = _scan(instance, is_alive)
    released = (_release(instance, run, held.get(run.run.run_id, Counter()), stop) for run in dead)
    return [run for run in released if run is not None]


def format_released(released: Sequence[ReleasedRun]) -> str:
    """The CLI's report: one line per released run, or one line saying there was none."""
    if not released:
        return "no dead runs: every STARTING/STARTED/CANCELING run's worker is alive, no finished run holds a slot"
    return "\n".join(f"released {run.describe()}" for run in released)


def _held_slots(instance: DagsterInstance) -> dict[str, Counter[str]]:
    """run id -> pool -> claimed slots; runs with only pending (queued or assigned) steps map to an empty Counter."""
    storage = instance.event_log_storage
    held: dict[str, Counter[str]] = defaultdict(Counter)
    if not storage.supports_global_concurrency_limits:
        return held
    for run_id in storage.get_concurrency_run_ids():
        held[run_id]  # pending steps: assigned ones count against the pool's limit
    keys = sorted(storage.get_concurrency_keys() | OUR_POOLS)
    for key, info in storage.get_concurrency_infos(keys).items():
        for slot in info.claimed_slots:
            if slot.run_id:
                held[slot.run_id][key] += 1
        for step in info.pending_steps:
            held[step.run_id]
    return held


def _ours(run: DagsterRun, held: Mapping[str, Counter[str]]) -> bool:
    """A run of this code location (the job, or asset runs of its assets) or one blocking its pools."""
    if run.job_name in OUR_JOBS:
        return True
    selected = set(run.asset_selection or ()) | {check.asset_key for check in (run.asset_check_selection or ())}
    return bool(selected & OUR_ASSETS) or bool(set(held.get(run.run_id, ())) & OUR_POOLS)


def _run_processes(instance: DagsterInstance, run: DagsterRun, held: Mapping[str, Counter[str]]) -> RunProcesses:
    entries = instance.all_logs(run.run_id, of_type={
        DagsterEventType.RUN_START, DagsterEventType.ENGINE_EVENT, DagsterEventType.STEP_WORKER_STARTED})
    run_worker, step_workers = worker_processes(entries)
    return RunProcesses(run.run_id, run.job_name, run.status, run_worker, step_workers,
                        holds_slots=run.run_id in held)


def _scan(instance: DagsterInstance, is_alive: Callable[[WorkerProcess], bool]
          ) -> tuple[list[DeadRun], dict[str, Counter[str]]]:
    held = _held_slots(instance)
    records = list(instance.get_run_records(RunsFilter(statuses=list(IN_FLIGHT))))
    if held:
        records += instance.get_run_records(RunsFilter(run_ids=sorted(held), statuses=list(FINISHED)))
    candidates = [_run_processes(instance, r.dagster_run, held) for r in records if _ours(r.dagster_run, held)]
    return find_dead_runs(candidates, is_alive), held


def _release(instance: DagsterInstance, dead: DeadRun, held: Counter[str],
             stop: Callable[[WorkerProcess], bool]) -> ReleasedRun | None:
    run_id, worker = dead.run.run_id, dead.run.run_worker
    if instance.get_run_by_id(run_id) is None:
        return None  # deleted meanwhile
    stopped = tuple(orphan.pid for orphan in dead.orphans if stop(orphan))
    # Free before failing the run: the automatic retry (run_retries) that the failure triggers then finds
    # the pool open instead of waiting in the queue behind a run that can never release it.
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    freed = {pool: n for pool, n in held.items() if n}
    how = f"its process (pid {worker.pid}) is gone" if worker else "no process of it is alive"
    details = [f"freed pool slots: {', '.join(f'{p} x{n}' for p, n in sorted(freed.items()))}" if freed
               else "it held no pool slot"]
    if stopped:
        details.append("stopped orphaned step subprocesses: " + ", ".join(
            f"{o.pid} ({o.role})" for o in dead.orphans if o.pid in stopped))
    if len(stopped) < len(dead.orphans):
        details.append("could NOT stop orphaned step subprocesses (kill them by hand): " + ", ".join(
            f"{o.pid} ({o.role})" for o in dead.orphans if o.pid not in stopped))
    message = (f"{MESSAGE_PREFIX}: {how} without reporting an outcome (killed: SIGKILL, the OOM killer, a "
               f"restart). Released by usage_pipeline's dead-run check; {'; '.join(details)}.")
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    before = run.status
    instance.report_engine_event(message, run, EngineEventData(metadata={
        "run_worker_pid": str(worker.pid) if worker else "unknown",
        **{f"freed_{pool}": n for pool, n in freed.items()},
        "stopped_pids": ", ".join(map(str, stopped)) or "none"}))
    if run.status == DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, message)
    elif run.status in IN_FLIGHT:
        # Not STEP_FAILURE, so run_retries (retry_on_asset_or_op_failure: false) still retries it at once.
        instance.report_run_failed(run, message, JobFailureData(
            error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
    after = instance.get_run_by_id(run_id)
    day = run_day(run.tags)
    return ReleasedRun(run_id, run.job_name, day.isoformat() if day else None, before,
                       after.status if after else before, worker.pid if worker else None, freed, stopped, message)
