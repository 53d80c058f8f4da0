"""The `generations` asset (a day of OpenRouter generations upserted into InfluxDB) and its checks."""

import datetime as dt
from collections.abc import Iterator, Mapping

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    multi_asset_check,
)

from usage_pipeline.broadcast.coverage import push_coverage
from usage_pipeline.defs.partitions import capturable_day, daily_partitions, partition_day, settings_checked
from usage_pipeline.defs.resources import BroadcastJournalResource, InfluxDBResource, OpenRouterResource
from usage_pipeline.influx.errors import InfluxError
from usage_pipeline.ledger import record_day
from usage_pipeline.openrouter.counts import api_day_counts
from usage_pipeline.openrouter.transport import OpenRouterError
from usage_pipeline.reconcile import Verdict, cost_agrees, full_capture, no_duplicates

OPENROUTER_POOL = "openrouter_api"
REFRESH_TAG = "usage_pipeline/refresh"  # "true": fetch every record again, even those already stored whole


def refresh_asked(tags: Mapping[str, str]) -> bool:
    """Whether a run's tags ask to fetch the stored records again; a value other than true/false fails."""
    value = tags.get(REFRESH_TAG, "false").strip().lower()
    if value not in ("true", "false"):
        raise Failure(description=f"run tag {REFRESH_TAG}={tags[REFRESH_TAG]!r}: must be true or false",
                      allow_retries=False)
    return value == "true"


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),  # one run per day, own check results
    pool=OPENROUTER_POOL,
    key_prefix=["influxdb"],
    group_name="ledger",
    kinds={"influxdb"},
    description="Every OpenRouter generation of the UTC day, upserted into InfluxDB measurement `generations`. "
                "A rerun fetches only the records not already stored whole; run tag "
                f"{REFRESH_TAG}=true fetches them all again.",
)
def generations(context: AssetExecutionContext, openrouter: OpenRouterResource, influxdb: InfluxDBResource,
                broadcast: BroadcastJournalResource) -> MaterializeResult:
    day = capturable_day(context.partition_key)
    refresh = refresh_asked(context.run.tags)
    with settings_checked():  # every setting, before any query
        store, client, journal_path = influxdb.store(), openrouter.client(), broadcast.journal_path
    try:
        with store, client:
            store.ensure_database()
            recording = record_day(client, store, day, refresh=refresh)
            pushed = push_coverage(journal_path, day, store.day_ids(day))  # what push delivered of the day
    except (OpenRouterError, InfluxError) as exc:  # their messages say what was tried; no secret in them
        raise Failure(description=str(exc)) from None
    metadata = {**recording.summary(), **pushed}
    context.log.info(f"{day}: {metadata}")
    if not recording.complete:
        raise Failure(description=recording.problems(), metadata=metadata)
    return MaterializeResult(metadata=metadata)


def _result(verdict: Verdict, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
            check_name: str | None = None) -> AssetCheckResult:
    metadata = {**verdict.metadata, "result": verdict.description}
    if verdict.diff_markdown:
        metadata["diff"] = MetadataValue.md(verdict.diff_markdown)
    return AssetCheckResult(passed=verdict.passed, severity=severity, metadata=metadata,
                            description=verdict.description, check_name=check_name)


def _day(context: AssetCheckExecutionContext) -> dt.date:
    return partition_day(context.partition_key)


@asset_check(asset=generations, blocking=True,
             description="InfluxDB holds exactly one point per generation of the day (points == distinct ids).")
def zero_duplicates(context: AssetCheckExecutionContext, influxdb: InfluxDBResource) -> AssetCheckResult:
    with influxdb.store() as store:
        return _result(no_duplicates(store, _day(context)))


FULL_CAPTURE = "full_capture_matches_openrouter"
COST = "cost_matches_openrouter"


@multi_asset_check(
    specs=[
        AssetCheckSpec(FULL_CAPTURE, asset=generations, blocking=True,
                       description="The day's distinct stored ids == OpenRouter's analytics count, exactly, and == "
                                   "/activity's requests per model (by slug) within its 30-day window. Analytics' "
                                   "model labels are shown, never matched as names."),
        AssetCheckSpec(COST, asset=generations,
                       description="Stored usage (USD) agrees with analytics' total_usage for the day, and per "
                                   "model with /activity's usage."),
    ],
    pool=OPENROUTER_POOL,
)
def checks_against_openrouter(context: AssetCheckExecutionContext, influxdb: InfluxDBResource,
                              openrouter: OpenRouterResource) -> Iterator[AssetCheckResult]:
    """Both comparisons with OpenRouter from one read of its counts, inside the `openrouter_api` pool.

    The counts are read live, so rerunning the checks later catches generations that arrived late;
    `duckdb/daily_usage` takes OpenRouter's figures from this check's result in the same run.
    """
    with settings_checked():
        client, store = openrouter.client(), influxdb.store()
    with client:
        counts = api_day_counts(client, _day(context))
    with store:
        yield _result(full_capture(store, counts), check_name=FULL_CAPTURE)
        yield _result(cost_agrees(store, counts), AssetCheckSeverity.WARN, check_name=COST)
