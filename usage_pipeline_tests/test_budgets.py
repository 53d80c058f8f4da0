"""Budgets: the organisations file's `budgets` read strictly, and a day's exact spend compared with each
(`daily_budgets`, the `spend_within_budgets` verdict). No server: DuckDB in memory."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from usage_pipeline.budgets import API_KEY, ORGANISATION, USER, Budget, BudgetRow, Budgets, budget_verdict
from usage_pipeline.duck.budgets import BUDGETS_SCHEMA, BUDGETS_TABLE
from usage_pipeline.duck.summaries import CaptureStatus, summarize_day
from usage_pipeline.organisations import parse_organisations
from usage_pipeline.settings import SettingError

pytestmark = pytest.mark.pure
SOURCE = "USAGE_ORGANISATIONS file /etc/usage/orgs.yaml"
DAY = dt.date(2026, 11, 20)


def organisation_with(budgets: str) -> Budgets:
    text = f"organisations:\n  - name: acme\n    key_variable: ACME_KEY\n    budgets: {budgets}\n"
    return parse_organisations(text, SOURCE).members[0].budgets


def test_the_documented_shape_is_read_in_order() -> None:
    budgets = organisation_with('{daily_usd: 50, api_keys: {"prod-key": 20}, users: {"user-42": 5.5}}')
    assert budgets.members == (Budget(ORGANISATION, "acme", 50.0), Budget(API_KEY, "prod-key", 20.0),
                               Budget(USER, "user-42", 5.5))
    assert organisation_with("{}") == Budgets() and not organisation_with("{}")
    no_field = parse_organisations("organisations:\n  - {name: acme, key_variable: ACME_KEY}\n", SOURCE)
    assert no_field.members[0].budgets == Budgets()


@pytest.mark.parametrize(("budgets", "says"), [
    ("{daily_usd: fifty}", "budgets.daily_usd must be a number of USD, got 'fifty'"),
    ('{daily_usd: "50"}', "budgets.daily_usd must be a number of USD, got '50'"),
    ("{daily_usd: true}", "budgets.daily_usd must be a number of USD, got 'True'"),
    ("{daily_usd: -1}", "budgets.daily_usd must be a finite number of USD, at least 0, got -1"),
    ("{daily_usd: .nan}", "budgets.daily_usd must be a finite number of USD, at least 0, got nan"),
    ("{daily_usd: .inf}", "budgets.daily_usd must be a finite number of USD, at least 0, got inf"),
    ("{api_keys: {prod-key: -0.01}}", "budgets.api_keys['prod-key'] must be a finite number of USD, at least 0"),
    ("{users: {u1: [5]}}", "budgets.users['u1'] must be a number of USD, got '[5]'"),
    ("{users: {42: 5}}", "budgets.users has name '42': names must be text"),
    ("{api_keys: [prod-key]}", "budgets.api_keys must be a mapping of name: USD, got list"),
    ("{weekly_usd: 5}", "budgets has unknown field 'weekly_usd' (fields: api_keys, daily_usd, users)"),
    ("50", "budgets must be a mapping with daily_usd, api_keys and/or users, got int"),
])
def test_a_bad_budget_is_one_line_naming_the_file_the_organisation_and_the_field(budgets: str, says: str) -> None:
    with pytest.raises(SettingError) as refused:
        organisation_with(budgets)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: organisations[0] (acme): ")
    assert says in message


def ledger(rows: list[tuple[str | None, str | None, float]]) -> pd.DataFrame:
    """One generation per row: (api_key, external_user, usage), inside DAY."""
    start = int(dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    return pd.DataFrame({"time": [start + n for n in range(len(rows))],
                         "generation_id": [f"gen-{n}" for n in range(len(rows))],
                         "model": "openai/gpt-4.1", "api_key": [r[0] for r in rows],
                         "external_user": [r[1] for r in rows], "usage": [r[2] for r in rows],
                         "total_cost": [r[2] for r in rows]})


def test_the_day_s_spend_is_compared_with_each_budget_set() -> None:
    budgets = Budgets((Budget(ORGANISATION, "acme", 10.0), Budget(API_KEY, "prod", 3.0), Budget(API_KEY, "idle", 1.0),
                       Budget(USER, "u1", 2.5)))
    frame = ledger([("prod", "u1", 1.5), ("prod", "u1", 1.75), ("prod", None, 0.25), ("dev", "u2", 4.0)])
    summary = summarize_day(DAY, [frame], CaptureStatus(4, 7.5, "complete"), org="acme", budgets=budgets)
    rows = summary.tables[BUDGETS_TABLE]
    assert list(rows.columns) == [name for name, _ in BUDGETS_SCHEMA]
    found = {(r.scope, r.who): (r.budget_usd, r.spend_usd, r.over_usd) for r in rows.itertuples()}
    assert found == {("organisation", "acme"): (10.0, 7.5, 0.0), ("api_key", "prod"): (3.0, 3.5, 0.5),
                     ("api_key", "idle"): (1.0, 0.0, 0.0), ("user", "u1"): (2.5, 3.25, 0.75)}
    assert {pd.Timestamp(d).date() for d in rows["day"]} == {DAY} and set(rows["org"]) == {"acme"}
    assert summarize_day(DAY, [frame], CaptureStatus(4, 7.5, "complete"), org="acme").tables[BUDGETS_TABLE].empty


def test_a_budget_met_exactly_is_not_crossed() -> None:
    frame = ledger([("prod", None, 2.0)])
    rows = summarize_day(DAY, [frame], CaptureStatus(1, 2.0, "complete"), org="acme",
                         budgets=Budgets((Budget(API_KEY, "prod", 2.0),))).tables[BUDGETS_TABLE]
    assert rows[["spend_usd", "over_usd"]].values.tolist() == [[2.0, 0.0]]


def test_the_verdict_names_who_crossed_by_how_much_largest_first() -> None:
    rows = [BudgetRow("organisation", "acme", 10, 7.5, 0), BudgetRow("api_key", "prod", 3, 3.5, 0.5),
            BudgetRow("user", "u1", 2.5, 3.25, 0.75)]
    verdict = budget_verdict("acme", "2026-11-20", rows)
    assert not verdict.passed
    assert verdict.description == (
        "acme 2026-11-20: 2 of 3 budget(s) crossed: user u1 spent $3.25 of its $2.50 daily budget (over by $0.75); "
        "API key prod spent $3.50 of its $3.00 daily budget (over by $0.50)")
    assert verdict.metadata["crossed"] == 2 and verdict.metadata["over_usd"] == 1.25
    assert [r["who"] for r in verdict.metadata["crossed_budgets"]] == ["u1", "prod"]
    assert verdict.metadata["organisation"] == "acme" and verdict.metadata["day"] == "2026-11-20"
    green = budget_verdict("acme", "2026-11-20", rows[:1])
    assert green.passed and green.description == "acme 2026-11-20: within all 1 budget(s)"
    assert budget_verdict("acme", "2026-11-20", []).description == "acme 2026-11-20: no budget set"
