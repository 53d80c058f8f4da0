"""The `duckdb/daily_usage` asset (the DuckDB summary tables), the `daily_ledger` job that runs a whole
organisation-day (capture, checks, summary), and its schedule (every organisation's completed day)."""

from dataclasses import dataclass

import pandas
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DagsterEventType,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from usage_pipeline.defs.budgets import budget_check, budget_check_result
from usage_pipeline.defs.executor import DUCKDB_STEP_TAGS
from usage_pipeline.defs.generations import FULL_CAPTURE, generations
from usage_pipeline.defs.partitions import capturable, ledger_partitions, settings_checked
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OrganisationsResource
from usage_pipeline.duck.publish import publish, replace_day
from usage_pipeline.duck.summaries import CaptureStatus, ModelLabels, summarize_day

SETTLE_HOURS = 2  # analytics can lag live traffic; a day is final some time after midnight UTC


@dataclass(frozen=True)
class CaptureProof:
    """What the blocking full-capture check of this run found: OpenRouter's count and usage for the day."""

    api_requests: int
    api_usage: float
    model_names: dict[str, ModelLabels]  # each stored model name's slug and label, as the check resolved them


def capture_proof(context: AssetExecutionContext) -> CaptureProof:
    """OpenRouter's figures from this run's passing full-capture check, so a run reads them once.

    The summary is built only in a run whose check proved the day whole (the daily_ledger job, or a
    selection with the checks); the check is blocking, so a failed one never reaches here.
    """
    events = context.instance.all_logs(context.run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [e.dagster_event.asset_check_evaluation_data for e in events if e.dagster_event is not None]
    found = [e for e in evaluations if e.check_name == FULL_CAPTURE and e.asset_key == generations.key]
    if not found or not found[-1].passed:
        raise Failure(description=f"not summarizing: no passing {FULL_CAPTURE} check in this run; run the "
                                  "daily_ledger job (or select the checks of influxdb/generations with this asset)",
                      allow_retries=False)
    metadata = found[-1].metadata
    usage = metadata["api_usage_usd"].value
    requests = metadata["api_request_count"].value
    if not isinstance(requests, int) or not isinstance(usage, (int, float)):  # written by our own check
        raise Failure(description=f"not summarizing: {FULL_CAPTURE} recorded api_request_count={requests!r}, "
                                  f"api_usage_usd={usage!r}", allow_retries=False)
    return CaptureProof(api_requests=requests, api_usage=float(usage),
                        model_names=_model_labels(metadata.get("model_names")))


def _model_labels(recorded: object) -> dict[str, ModelLabels]:
    """The check's `model_names` ({name: {slug, label, permaslug}}); absent (a check of an older version): none."""
    value = getattr(recorded, "value", None) or {}
    if not isinstance(value, dict):
        raise Failure(description=f"not summarizing: {FULL_CAPTURE} recorded model_names={value!r:.80}",
                      allow_retries=False)
    return {str(name): ModelLabels(slug=names.get("slug"), label=names.get("label"))
            for name, names in value.items() if isinstance(names, dict)}


def top_models_markdown(daily_usage_rows: pandas.DataFrame, limit: int = 5) -> str:
    """The day's top models by spend, as a small markdown table for the asset page."""
    top = daily_usage_rows.sort_values(["usage", "requests"], ascending=False).head(limit)
    lines = ["| model | slug | label | requests | spend USD | prompt tokens | completion tokens |",
             "|---|---|---|---:|---:|---:|---:|"]
    def shown(value: object) -> str:
        return "-" if value is None or (isinstance(value, float) and value != value) else str(value)  # NULL, NaN

    lines += [f"| {r.model} | {shown(r.model_slug)} | {shown(r.model_label)} | {r.requests:,} | {r.usage:,.4f} "
              f"| {r.tokens_prompt:,} | {r.tokens_completion:,} |" for r in top.itertuples()]
    return "\n".join(lines)


@asset(
    partitions_def=ledger_partitions,
    deps=[generations],
    pool="duckdb_writer",
    op_tags=DUCKDB_STEP_TAGS,  # on Celery, only the DuckDB machine's worker runs it
    key_prefix=["duckdb"],
    group_name="ledger",
    kinds={"duckdb"},
    check_specs=[budget_check],  # reported from the daily_budgets rows built here (defs/budgets.py)
    description="Daily summaries in DuckDB (daily_usage, by provider, key, user; daily_totals; daily_budgets), "
                "each row with its `org`, rebuilt for the organisation's day from its deduplicated InfluxDB points "
                "once the day is proven whole.",
)
def daily_usage(context: AssetExecutionContext, influxdb: InfluxDBResource, usage_db: DailyUsageDatabase,
                organisations: OrganisationsResource) -> MaterializeResult:
    partition = capturable(context.partition_key)
    day = partition.day
    proof = capture_proof(context)
    with settings_checked():
        configured = organisations.organisations()
        store, published_path = influxdb.store(configured, partition.org), usage_db.published
        budgets = configured.get(partition.org).budgets  # compared with the day's spend in daily_budgets
    with store:
        summary = summarize_day(day, store.iter_day_frames(day),
                                CaptureStatus(api_requests=proof.api_requests, api_cost=proof.api_usage,
                                              status="complete"), proof.model_names, org=partition.org,
                                budgets=budgets)
    per_model, totals = summary.tables["daily_usage"], summary.tables["daily_totals"].iloc[0]
    if int(totals["requests"]) != proof.api_requests:  # the ledger changed since the check proved it
        raise Failure(description=f"not summarizing {partition}: the ledger now holds {int(totals['requests'])} "
                                  f"generations, OpenRouter counts {proof.api_requests}; rerun the day")
    with usage_db.store_connection() as conn:
        replace_day(conn, summary)
        published = publish(conn, published_path)
    budgets_checked = budget_check_result(partition, summary.tables["daily_budgets"])  # spend_within_budgets
    return MaterializeResult(check_results=[budgets_checked], metadata={
        "organisation": partition.org,
        "day": day.isoformat(),
        # numbers the asset page plots across partitions
        "requests": int(totals["requests"]),
        "openrouter_requests": proof.api_requests,
        "spend_usd": round(float(per_model["usage"].sum()), 6),
        "total_cost_usd": round(float(totals["total_cost"]), 6),
        "tokens_prompt": int(per_model["tokens_prompt"].sum()),
        "tokens_completion": int(per_model["tokens_completion"].sum()),
        "tokens_reasoning": int(per_model["tokens_reasoning"].sum()),
        "tokens_cached": int(per_model["tokens_cached"].sum()),
        "top_models": MetadataValue.md(top_models_markdown(per_model)),
        "rows": MetadataValue.json({name: len(frame) for name, frame in summary.tables.items()}),  # not plotted
        "duckdb_path": str(published_path),
        "publish_seconds": round(published.seconds, 3),
    })


daily_ledger_job = define_asset_job(
    "daily_ledger",
    selection=AssetSelection.assets(generations, daily_usage),
    description="One organisation's UTC day: capture into its InfluxDB database, prove it (checks), summarize "
                "into DuckDB.",
)

daily_ledger_schedule = build_schedule_from_partitioned_job(
    daily_ledger_job, hour_of_day=SETTLE_HOURS, minute_of_hour=0, name="daily_ledger_schedule",
    description=f"Every day at {SETTLE_HOURS:02d}:00 UTC, run the day that just completed, one run per "
                "organisation (at most one at a time each: the run queue's limit on dagster/partition/org).",
)
