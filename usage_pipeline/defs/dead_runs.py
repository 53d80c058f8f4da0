"""The `release_dead_run_workers` sensor: under the daemon, release runs whose run worker process died without
reporting (SIGKILL, the OOM killer, a host restart), so their pool slots free up and run_retries reruns them.

The work is `usage_pipeline.runs.dead.release_dead_runs` (why Dagster's own run monitoring cannot do it is
said there); `usage-pipeline release-dead-runs` calls the same function without a daemon. This module only
schedules it and reports what it did.
"""

from __future__ import annotations

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from usage_pipeline.runs.dead import release_dead_runs, runs_are_local


@sensor(name="release_dead_run_workers", minimum_interval_seconds=20, default_status=DefaultSensorStatus.RUNNING,
        description="Fails runs whose run worker process died (SIGKILL, OOM) and frees their pool slots, so "
                    "the automatic retry (run_retries) can start; Dagster's run monitoring cannot detect this "
                    "with the DefaultRunLauncher.")
def release_dead_run_workers(context: SensorEvaluationContext) -> SkipReason:
    if not runs_are_local(context.instance):
        return SkipReason("runs are not launched on this host (not the DefaultRunLauncher): left to run monitoring")
    released = release_dead_runs(context.instance)
    for run in released:
        context.log.warning(run.describe())
    if not released:
        return SkipReason("every in-flight run's worker is alive; no finished run holds a pool slot")
    return SkipReason("released " + "; ".join(run.describe() for run in released))
