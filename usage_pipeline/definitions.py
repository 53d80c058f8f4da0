"""The code location: `dagster dev -w workspace.yaml` (or `dg dev`) loads `defs` from this module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Definitions, ExecutorDefinition

from usage_pipeline.defs.alerts import ALERT_SENSORS
from usage_pipeline.defs.dead_runs import release_dead_run_workers
from usage_pipeline.defs.executor import executor_from_env
from usage_pipeline.defs.freshness import capture_freshness
from usage_pipeline.defs.generations import (
    checks_against_openrouter,
    generations,
    zero_duplicates,
)
from usage_pipeline.defs.history import usage_history, usage_history_job, usage_history_schedule
from usage_pipeline.defs.organisations import organisations_from_config
from usage_pipeline.defs.recapture import recapture_failed_days
from usage_pipeline.defs.resources import BroadcastJournalResource, OrganisationsResource, resources_from_env
from usage_pipeline.defs.summaries import daily_ledger_job, daily_ledger_schedule, daily_usage
from usage_pipeline.defs.today import usage_today, usage_today_job, usage_today_schedule
from usage_pipeline.organisations import load_organisations


def build_defs(resources: Mapping[str, Any], executor: ExecutorDefinition | None = None) -> Definitions:
    """Everything, wired to the given resources (tests pass their own servers; without a journal or
    organisations of their own, BROADCAST_JOURNAL_PATH's and USAGE_ORGANISATIONS')."""
    return Definitions(
        assets=[generations.map_asset_specs(capture_freshness), daily_usage, usage_history, usage_today],
        asset_checks=[zero_duplicates, checks_against_openrouter],
        jobs=[daily_ledger_job, usage_history_job, usage_today_job],
        schedules=[daily_ledger_schedule, usage_history_schedule, usage_today_schedule],
        sensors=[organisations_from_config, recapture_failed_days, release_dead_run_workers, *ALERT_SENSORS],
        resources={"broadcast": BroadcastJournalResource(), "organisations": OrganisationsResource(), **resources},
        executor=executor,
    )


load_organisations()  # a bad USAGE_ORGANISATIONS file stops the code location loading, in one line
defs = build_defs(resources_from_env(), executor_from_env())
