"""Daily spend budgets in USD: an organisation's whole day, an API key's, an external user's.

A budget does not stop spending (OpenRouter's own key limits do that); it tells an operator the day after,
from the day's exact spend, who spent more than was planned and by how much. The organisations file gives them
per organisation, all optional:

    budgets:
      daily_usd: 50                 # the organisation's whole day
      api_keys: {prod-key: 20}      # per API key label (the `api_key` column: analytics' label, not the key)
      users: {user-42: 5}           # per `external_user`

Spend is the sum of `usage` (USD charged, as `daily_usage.usage` and the asset's `spend_usd`); a budget is
crossed when the spend is strictly above it. `duckdb/daily_usage` stores the comparison in `daily_budgets`
and its check `spend_within_budgets` warns about each crossing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from usage_pipeline.settings import SettingError

ORGANISATION, API_KEY, USER = "organisation", "api_key", "user"  # daily_budgets.scope
_FIELDS = {"daily_usd": ORGANISATION, "api_keys": API_KEY, "users": USER}
SCOPE_NAMES = {ORGANISATION: "organisation", API_KEY: "API key", USER: "user"}


@dataclass(frozen=True)
class Budget:
    scope: str  # organisation, api_key or user
    who: str  # the organisation's name, the key's label or the external user
    usd: float


@dataclass(frozen=True)
class Budgets:
    """An organisation's daily budgets; empty when its entry has none."""

    members: tuple[Budget, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.members)


def parse_budgets(value: Any, org: str, where: str) -> Budgets:
    """The `budgets` field of organisation `org`'s entry; anything else than the shape above raises a one-line
    SettingError naming `where` (the file and entry) and the field."""
    if value is None:
        return Budgets()
    if not isinstance(value, dict):
        raise SettingError(f"{where}: budgets must be a mapping with daily_usd, api_keys and/or users, "
                           f"got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - set(_FIELDS))
    if unknown:
        raise SettingError(f"{where}: budgets has unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})")
    members = []
    if value.get("daily_usd") is not None:
        members.append(Budget(ORGANISATION, org, _usd(value["daily_usd"], f"{where}: budgets.daily_usd")))
    for field in ("api_keys", "users"):
        named = value.get(field)
        if named is None:
            continue
        if not isinstance(named, dict):
            raise SettingError(f"{where}: budgets.{field} must be a mapping of name: USD, got {type(named).__name__}")
        for who, usd in named.items():
            if not isinstance(who, str) or not who.strip():
                raise SettingError(f"{where}: budgets.{field} has name {str(who)[:80]!r}: names must be text "
                                   "(quote one YAML reads as a number or boolean)")
            members.append(Budget(_FIELDS[field], who, _usd(usd, f"{where}: budgets.{field}[{who[:80]!r}]")))
    return Budgets(tuple(members))


def _usd(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(f"{what} must be a number of USD, got {str(value)[:80]!r}")
    if not math.isfinite(value) or value < 0:
        raise SettingError(f"{what} must be a finite number of USD, at least 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BudgetRow:
    """One row of `daily_budgets`: a budget against the day's exact spend."""

    scope: str
    who: str
    budget_usd: float
    spend_usd: float
    over_usd: float  # spend - budget when above it, else 0

    @property
    def crossed(self) -> bool:
        return self.over_usd > 0

    def sentence(self) -> str:
        """'API key prod-key spent $23.41 of its $20.00 budget (over by $3.41)'."""
        return (f"{SCOPE_NAMES.get(self.scope, self.scope)} {self.who} spent ${self.spend_usd:,.2f} of its "
                f"${self.budget_usd:,.2f} daily budget (over by ${self.over_usd:,.2f})")


@dataclass(frozen=True)
class BudgetVerdict:
    """What the `spend_within_budgets` check reports for one organisation-day."""

    passed: bool
    description: str
    crossed: tuple[BudgetRow, ...]
    metadata: dict[str, Any]


def budget_verdict(org: str, day: str, rows: Iterable[BudgetRow]) -> BudgetVerdict:
    """Each budget crossed on the day, named with its spend and overshoot; passed when none is."""
    rows = list(rows)
    crossed = tuple(sorted((r for r in rows if r.crossed), key=lambda r: (-r.over_usd, r.scope, r.who)))
    if not rows:
        description = f"{org} {day}: no budget set"
    elif not crossed:
        description = f"{org} {day}: within all {len(rows)} budget(s)"
    else:
        description = f"{org} {day}: {len(crossed)} of {len(rows)} budget(s) crossed: " + "; ".join(
            row.sentence() for row in crossed)
    metadata: dict[str, Any] = {
        "organisation": org, "day": day, "budgets": len(rows), "crossed": len(crossed),
        "over_usd": round(sum(r.over_usd for r in crossed), 6),
        "crossed_budgets": [{"scope": r.scope, "who": r.who, "budget_usd": r.budget_usd,
                             "spend_usd": round(r.spend_usd, 6), "over_usd": round(r.over_usd, 6)} for r in crossed],
    }
    return BudgetVerdict(not crossed, description, crossed, metadata)


def rows_from_metadata(metadata: Mapping[str, Any]) -> list[BudgetRow]:
    """The crossed budgets a `spend_within_budgets` evaluation recorded (its `crossed_budgets`)."""
    found = metadata.get("crossed_budgets") or []
    return [BudgetRow(str(r["scope"]), str(r["who"]), float(r["budget_usd"]), float(r["spend_usd"]),
                      float(r["over_usd"])) for r in found if isinstance(r, dict)]
