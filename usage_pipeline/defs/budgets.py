"""The `spend_within_budgets` check of `duckdb/daily_usage`: a warning, per organisation-day, naming each
budget the day's exact spend crossed and by how much (usage_pipeline/budgets.py).

On `daily_usage` rather than on the ledger because that asset already sums the proven day per key and user:
it writes the comparison into `daily_budgets` with the day's summaries, and this check reads those rows back
from the published file, so the check, the table and the alert say the same figures. Not blocking: spending
more than planned is news, not a reason to withhold the day's summaries.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Failure,
    MetadataValue,
    asset_check,
)

from usage_pipeline.budgets import budget_verdict
from usage_pipeline.defs.partitions import ledger_partitions, org_day
from usage_pipeline.defs.resources import DailyUsageDatabase
from usage_pipeline.defs.summaries import daily_usage
from usage_pipeline.duck.budgets import stored_budgets

BUDGET_CHECK = "spend_within_budgets"


@asset_check(asset=daily_usage, name=BUDGET_CHECK, partitions_def=ledger_partitions, blocking=False,
             description="The organisation-day's spend (sum of usage) is within each daily budget of the "
                         "organisations file: the organisation's, each API key's, each user's (daily_budgets).")
def spend_within_budgets(context: AssetCheckExecutionContext, usage_db: DailyUsageDatabase) -> AssetCheckResult:
    partition = org_day(context.partition_key)
    rows = stored_budgets(usage_db.published, partition.org, partition.day)
    if rows is None:
        raise Failure(description=f"{partition}: not summarized in {usage_db.published}; materialize "
                                  "duckdb/daily_usage for it first", allow_retries=False)
    verdict = budget_verdict(partition.org, partition.day.isoformat(), rows)
    table = ["| scope | who | budget USD | spend USD | over USD |", "|---|---|---:|---:|---:|"]
    table += [f"| {r.scope} | {r.who} | {r.budget_usd:,.2f} | {r.spend_usd:,.4f} | {r.over_usd:,.4f} |" for r in rows]
    return AssetCheckResult(passed=verdict.passed, severity=AssetCheckSeverity.WARN, description=verdict.description,
                            metadata={**verdict.metadata, "table": MetadataValue.md("\n".join(table))})
