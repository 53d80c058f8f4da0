"""Where a run's steps execute: Dagster's default (a process per step on the run's machine), or Celery
workers on any machine when USAGE_CELERY_BROKER_URL is set when the code location loads.

The broker URL itself is read when a run starts (an `env` config source, so it never appears in run config
or the UI); workers read it from the same variable through `celery.yaml` (`dagster-celery worker start -A
dagster_celery.app -y celery.yaml`). Runs stay one organisation-day each, queued by Dagster's run queue with
its per-organisation tag limit, so the engine spreads steps, not organisations' budgets.

Steps that write the DuckDB store go to their own queue, DUCKDB_QUEUE, so only workers started with `-q
usage-duckdb` (on the machine holding USAGE_DUCKDB_PATH) take them; every other step goes to dagster-celery's
default queue (`dagster`), which a worker started without `-q` takes. Without Celery the tag does nothing.
"""

from __future__ import annotations

from dagster import ExecutorDefinition

from usage_pipeline.settings import setting

BROKER_VARIABLE = "USAGE_CELERY_BROKER_URL"
QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG, without importing Celery here
DUCKDB_QUEUE = "usage-duckdb"  # the one machine with the analysts' DuckDB file: its store and lock are local
DUCKDB_STEP_TAGS = {QUEUE_TAG: DUCKDB_QUEUE}  # op_tags of every asset that writes USAGE_DUCKDB_PATH


def executor_from_env() -> ExecutorDefinition | None:
    """The Celery executor when a broker is configured, else None (Dagster's default multiprocess executor)."""
    if setting(BROKER_VARIABLE) is None:
        return None
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {"broker": {"env": BROKER_VARIABLE}, "backend": {"env": BROKER_VARIABLE}}, name="celery")
