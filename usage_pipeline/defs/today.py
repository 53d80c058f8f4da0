"""The `duckdb/usage_today` asset (provisional hourly rows of the days not yet captured) and its schedule."""

import datetime as dt

import pandas
from dagster import (
    AssetExecutionContext,
    DefaultScheduleStatus,
    MaterializeResult,
    ScheduleDefinition,
    asset,
    define_asset_job,
)

from usage_pipeline.defs.executor import DUCKDB_STEP_TAGS
from usage_pipeline.defs.partitions import settings_checked
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OrganisationsResource
from usage_pipeline.duck.publish import publish
from usage_pipeline.duck.today import MAX_OPEN_DAYS, captured_days, hourly_rows, open_days, replace_open_days

REFRESH_MINUTES = 5


@asset(
    pool="duckdb_writer",
    op_tags=DUCKDB_STEP_TAGS,  # on Celery, only the DuckDB machine's worker runs it
    key_prefix=["duckdb"],
    group_name="today",
    kinds={"duckdb"},
    description="PROVISIONAL hourly usage per model, key and user of the days not yet captured (today, and "
                "yesterday before its nightly run), from what the Broadcast push drain has stored so far. "
                "The day's nightly exact capture (duckdb/daily_usage) replaces its rows.",
)
def usage_today(context: AssetExecutionContext, influxdb: InfluxDBResource, usage_db: DailyUsageDatabase,
                organisations: OrganisationsResource) -> MaterializeResult:
    now = dt.datetime.now(dt.UTC)
    with settings_checked():
        configured = organisations.organisations()
        stores = {name: influxdb.store(configured, name) for name in configured.names}
    frames, days_by_org = [], {}
    with usage_db.store_connection() as conn:
        for org, store in stores.items():  # each organisation's own open days, from its own database
            days = open_days(captured_days(conn, now.date() - dt.timedelta(days=MAX_OPEN_DAYS), org), now.date())
            with store:
                frames.append(hourly_rows(days, store.iter_day_frames, now.replace(tzinfo=None), org))
            days_by_org[org] = [day.isoformat() for day in days]
        rows = pandas.concat(frames, ignore_index=True)
        replace_open_days(conn, rows)
        published = publish(conn, usage_db.published)
    requests = int(rows["requests"].sum()) if len(rows) else 0
    return MaterializeResult(metadata={
        "days": days_by_org,
        "requests": requests,
        "spend_usd": round(float(rows["usage"].sum()), 6) if len(rows) else 0.0,
        "rows": len(rows),
        "as_of": now.isoformat(timespec="seconds"),
        "publish_seconds": round(published.seconds, 3),
    })


usage_today_job = define_asset_job("usage_today", selection=[usage_today],
                                   description="Refresh the provisional usage of the days not yet captured.")

usage_today_schedule = ScheduleDefinition(
    name="usage_today_schedule", job=usage_today_job, cron_schedule=f"*/{REFRESH_MINUTES} * * * *",
    execution_timezone="UTC", default_status=DefaultScheduleStatus.STOPPED,
    description=f"Every {REFRESH_MINUTES} minutes: today's provisional usage from what push stored.",
)
