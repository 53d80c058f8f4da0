"""The `organisations_from_config` sensor: the organisations of USAGE_ORGANISATIONS become `org` partitions.

Added, never deleted: removing an organisation from the file keeps its partitions' history in the UI, and a
run of one fails at once saying the organisation is not configured. `add_organisations` does the same
without a daemon (the CLI, the demo and the tests call it).
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import DagsterInstance, DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from usage_pipeline.defs.partitions import organisation_partitions
from usage_pipeline.organisations import DEFAULT_NAME, load_organisations


def missing_organisations(instance: DagsterInstance, names: Iterable[str]) -> list[str]:
    known = set(instance.get_dynamic_partitions(str(organisation_partitions.name)))
    return [name for name in names if name not in known]


def add_organisations(instance: DagsterInstance, names: Iterable[str]) -> list[str]:
    """Make every name an `org` partition of `instance`; returns those that were not one yet."""
    new = missing_organisations(instance, names)
    if new:
        instance.add_dynamic_partitions(str(organisation_partitions.name), new)
    return new


def default_instance() -> DagsterInstance:
    """An ephemeral instance whose one organisation is `default` (no USAGE_ORGANISATIONS): for in-process
    runs of a single-organisation ledger (benchmarks, scripts)."""
    instance = DagsterInstance.ephemeral()
    add_organisations(instance, [DEFAULT_NAME])
    return instance


@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Adds the organisations of USAGE_ORGANISATIONS (or `default`) as `org` partitions.")
def organisations_from_config(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    configured = load_organisations()  # a bad file fails the tick with its one-line message
    new = missing_organisations(context.instance, configured.names)
    if not new:
        return SkipReason(f"every organisation of {configured.source} is a partition already")
    context.log.info(f"adding organisation partitions: {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[organisation_partitions.build_add_request(new)])
