"""The `usage_history` asset: a year of OpenRouter's daily aggregates for the days the ledger did not capture.

Unpartitioned on purpose: one run reads every missing day of the last USAGE_HISTORY_DAYS in two analytics
queries per organisation (per model, per API key; each organisation with its own key, in turn), which
per-day partitions would turn into hundreds. Days with an exact (captured) row of the organisation are left
alone; a later capture of an aggregate day replaces its aggregates.
"""

import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Failure,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    asset,
    define_asset_job,
)

from usage_pipeline.defs.executor import DUCKDB_STEP_TAGS
from usage_pipeline.defs.generations import OPENROUTER_POOL
from usage_pipeline.defs.partitions import settings_checked
from usage_pipeline.defs.resources import DailyUsageDatabase, OpenRouterResource, OrganisationsResource
from usage_pipeline.duck.history import ensure_history_tables, exact_days, write_history
from usage_pipeline.duck.publish import publish
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.history import read_history
from usage_pipeline.openrouter.model_names import ModelName, read_model_names

HISTORY_HOUR = 3  # after the daily_ledger schedule (02:00 UTC), so yesterday is usually exact already


def history_window(span_days: int, today: dt.date | None = None) -> list[dt.date]:
    """The last `span_days` completed UTC days, oldest first."""
    today = today or dt.datetime.now(dt.UTC).date()
    return [today - dt.timedelta(days=k) for k in range(span_days, 0, -1)]


@asset(
    pool=OPENROUTER_POOL,
    op_tags=DUCKDB_STEP_TAGS,  # on Celery, only the DuckDB machine's worker runs it
    key_prefix=["duckdb"],
    group_name="ledger",
    kinds={"duckdb"},
    description="OpenRouter's daily per-model and per-API-key aggregates (history_by_model, history_by_api_key, "
                "daily_totals rows with capture_status 'aggregate') for every day of the last USAGE_HISTORY_DAYS "
                "without a captured row, and model_names from GET /models.",
)
def usage_history(context: AssetExecutionContext, openrouter: OpenRouterResource, usage_db: DailyUsageDatabase,
                  organisations: OrganisationsResource) -> MaterializeResult:
    with settings_checked():
        configured = organisations.organisations()
        clients = {org.name: openrouter.client(org) for org in configured.members}  # each with its own key
        published_path, span = usage_db.published, usage_db.history_span_days()
    window = history_window(span)
    per_org: dict[str, dict[str, int | float]] = {}
    written_days = queries = splits = disagree = 0
    names: list[ModelName] | None = None  # GET /models is one catalogue for everyone: read once
    for org, client in clients.items():
        with usage_db.store_connection() as conn:  # a short read: the store is not held while OpenRouter answers
            ensure_history_tables(conn)
            exact = exact_days(conn, window[0], window[-1], org) if window else set()
        try:
            with client:
                read = read_history(client, [day for day in window if day not in exact])
                first = names is None
                if names is None:
                    names = read_model_names(client)
        except OpenRouterError as exc:  # its message names the query, row and field; no secret in it
            raise Failure(description=f"{org}: {exc}") from None
        with usage_db.store_connection() as conn:
            written = write_history(conn, read, names if first else None, org)
        if written.days_views_disagree:
            context.log.warning(f"{org}: per-model and per-key request counts differ on "
                                f"{len(written.days_views_disagree)} days (first {written.days_views_disagree[0]}); "
                                "both are stored as received")
        per_org[org] = {"days_written": len(written.days_written), "requests": written.requests,
                        "spend_usd": round(written.usage, 6)}
        written_days += len(written.days_written)
        queries, splits = queries + read.analytics_queries, splits + read.splits
        disagree += len(written.days_views_disagree)
    with usage_db.store_connection() as conn:  # one snapshot for every organisation's days
        published = publish(conn, published_path)
    return MaterializeResult(metadata={
        "organisations": MetadataValue.json(per_org),
        "days_written": written_days,
        "days_skipped_exact": len(window) * len(clients) - written_days,
        "analytics_queries": queries,
        "splits": splits,
        "first_day": window[0].isoformat() if window else "",
        "last_day": window[-1].isoformat() if window else "",
        "requests": int(sum(o["requests"] for o in per_org.values())),
        "spend_usd": round(float(sum(o["spend_usd"] for o in per_org.values())), 6),
        "models_named": len(names or []),
        "days_views_disagree": disagree,
        "duckdb_path": str(published_path),
        "publish_seconds": round(published.seconds, 3),
    })


usage_history_job = define_asset_job(
    "usage_history",
    selection=AssetSelection.assets(usage_history),
    description="Fill every uncaptured day of the last USAGE_HISTORY_DAYS from OpenRouter's daily aggregates.",
)

usage_history_schedule = ScheduleDefinition(
    name="usage_history_schedule",
    job=usage_history_job,
    cron_schedule=f"0 {HISTORY_HOUR} * * *",
    execution_timezone="UTC",
    description=f"Every day at {HISTORY_HOUR:02d}:00 UTC, refresh the aggregate history.",
)
