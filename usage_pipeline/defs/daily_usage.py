"""The `daily_usage` DuckDB summaries, the job that runs a whole day, and its schedule."""

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from usage_pipeline.defs.generations import generations
from usage_pipeline.defs.partitions import capturable_day, daily_partitions, settings_checked
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OpenRouterResource
from usage_pipeline.duck.daily_usage import CaptureStatus, summarize_day
from usage_pipeline.duck.publish import publish, replace_day
from usage_pipeline.openrouter.counts import api_day_counts
from usage_pipeline.reconcile import full_capture

SETTLE_HOURS = 2  # analytics can lag live traffic; a day is final some time after midnight UTC


@asset(
    partitions_def=daily_partitions,
    deps=[generations],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    pool="duckdb_writer",
    key_prefix=["duckdb"],
    group_name="ledger",
    kinds={"duckdb"},
    description="Daily summaries in DuckDB (daily_usage, by provider, key, user; daily_totals), "
                "rebuilt for the day from the deduplicated InfluxDB points.",
)
def daily_usage(context: AssetExecutionContext, influxdb: InfluxDBResource, openrouter: OpenRouterResource,
                usage_db: DailyUsageDatabase) -> MaterializeResult:
    day = capturable_day(context.partition_key)
    with settings_checked():
        client, store, published_path = openrouter.client(), influxdb.store(), usage_db.published
    with client:
        counts = api_day_counts(client, day)
    with store:
        verdict = full_capture(store, counts)
        if not verdict.passed:  # the blocking check passed moments ago; never summarize a day that is not whole
            raise Failure(description=f"not summarizing: {verdict.description}", metadata=verdict.metadata)
        summary = summarize_day(day, store.iter_day_frames(day),
                                CaptureStatus(api_requests=counts.requests, api_cost=counts.usage, status="complete"))
    with usage_db.store_connection() as conn:
        replace_day(conn, summary)
        published = publish(conn, published_path)
    return MaterializeResult(metadata={
        "day": day.isoformat(),
        **{f"rows_{name}": len(frame) for name, frame in summary.tables.items()},
        "requests": verdict.metadata["stored_distinct_ids"],
        "duckdb_path": str(published_path),
        "publish_seconds": round(published.seconds, 3),
    })


daily_usage_job = define_asset_job(
    "daily_usage",
    selection=AssetSelection.assets(generations, daily_usage),
    description="One UTC day: capture into InfluxDB, prove it (checks), summarize into DuckDB.",
)

daily_usage_schedule = build_schedule_from_partitioned_job(
    daily_usage_job, hour_of_day=SETTLE_HOURS, minute_of_hour=0, name="daily_usage_schedule",
    description=f"Every day at {SETTLE_HOURS:02d}:00 UTC, run the day that just completed.",
)
