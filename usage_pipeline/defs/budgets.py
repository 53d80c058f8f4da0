"""The `spend_within_budgets` check of `duckdb/daily_usage`: a warning, per organisation-day, naming each
budget the day's exact spend crossed and by how much (usage_pipeline/budgets.py).

Reported by the `daily_usage` asset itself, from the `daily_budgets` rows it has just built and stored with
the day's summaries: the asset already sums the proven day per key and user, so the check, the table and the
alert say the same figures, and the run gains no step. Not blocking: spending more than planned is news, not
a reason to withhold the day's summaries.
"""

import pandas
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from usage_pipeline.budgets import BudgetRow, budget_verdict
from usage_pipeline.defs.partitions import OrgDay, ledger_partitions

BUDGET_CHECK = "spend_within_budgets"
DAILY_USAGE = AssetKey(["duckdb", "daily_usage"])

budget_check = AssetCheckSpec(
    BUDGET_CHECK, asset=DAILY_USAGE, partitions_def=ledger_partitions, blocking=False,
    description="The organisation-day's spend (sum of usage) is within each daily budget of the organisations "
                "file: the organisation's, each API key's, each user's (table daily_budgets).")


def budget_check_result(partition: OrgDay, daily_budgets: pandas.DataFrame) -> AssetCheckResult:
    """The check's result from the day's `daily_budgets` rows (a day without budgets passes, saying so)."""
    rows = [BudgetRow(str(r["scope"]), str(r["who"]), float(r["budget_usd"]), float(r["spend_usd"]),
                      float(r["over_usd"])) for r in daily_budgets.to_dict("records")]
    verdict = budget_verdict(partition.org, partition.day.isoformat(), rows)
    table = ["| scope | who | budget USD | spend USD | over USD |", "|---|---|---:|---:|---:|"]
    table += [f"| {r.scope} | {r.who} | {r.budget_usd:,.2f} | {r.spend_usd:,.4f} | {r.over_usd:,.4f} |" for r in rows]
    return AssetCheckResult(check_name=BUDGET_CHECK, passed=verdict.passed, severity=AssetCheckSeverity.WARN,
                            description=verdict.description,
                            metadata={**verdict.metadata, "table": MetadataValue.md("\n".join(table))})
