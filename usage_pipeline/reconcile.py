"""The ledger's proofs for a day: no duplicates, full capture against OpenRouter's counts, cost agreement.

Plain functions returning `Verdict`s, so the Dagster checks stay thin and tests call them directly.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.counts import ApiDayCounts

COST_RELATIVE_TOLERANCE = 1e-6
COST_ABSOLUTE_TOLERANCE = 1e-6  # USD; float sums in different orders differ in the last bits


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    diff_markdown: str | None = None


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def no_duplicates(store: InfluxStore, day: dt.date) -> Verdict:
    """Every stored point of the day is a distinct generation: points == distinct generation_ids."""
    counts = store.day_counts(day)
    extra = counts.points - counts.distinct_ids
    return Verdict(
        passed=extra == 0,
        description=(f"{day}: {counts.points} points, {counts.distinct_ids} distinct generation ids"
                     + ("" if extra == 0 else f": {extra} duplicate point(s)")),
        metadata={"day": day.isoformat(), "points": counts.points, "distinct_generation_ids": counts.distinct_ids,
                  "duplicate_points": extra},
    )


def full_capture(store: InfluxStore, api: ApiDayCounts) -> Verdict:
    """Distinct ids stored per model == OpenRouter's request_count per model (and /activity's, when in range)."""
    stored = store.ids_by_model(api.day)
    sources: dict[str, dict[str, int]] = {"analytics": {m: u.requests for m, u in api.analytics.items()}}
    if api.activity_requests is not None:
        sources["activity"] = api.activity_requests
    rows = []
    for model in sorted(set(stored).union(*sources.values())):
        mine = stored.get(model, 0)
        theirs = {name: counts.get(model, 0) for name, counts in sources.items()}
        if any(mine != n for n in theirs.values()):
            rows.append([model, mine, *theirs.values(), *(mine - n for n in theirs.values())])
    total = sum(stored.values())
    metadata: dict[str, Any] = {
        "day": api.day.isoformat(),
        "stored_distinct_ids": total,
        "api_request_count": sum(sources["analytics"].values()),
        "models": len(stored),
        "activity_checked": api.activity_requests is not None,
    }
    if api.activity_requests is not None:
        metadata["activity_requests"] = sum(api.activity_requests.values())
    diff = None
    if rows:
        names = list(sources)
        diff = _table(["model", "stored", *names, *(f"stored - {n}" for n in names)], rows)
        metadata["models_differing"] = len(rows)
    return Verdict(
        passed=not rows,
        description=(f"{api.day}: {total} generations stored, matching OpenRouter's counts for every model"
                     if not rows else f"{api.day}: {len(rows)} model(s) differ from OpenRouter's counts"),
        metadata=metadata,
        diff_markdown=diff,
    )


def cost_agrees(store: InfluxStore, api: ApiDayCounts) -> Verdict:
    """Stored `usage` per model vs analytics `total_usage` (credits spent) for the day."""
    stored = store.usage_by_model(api.day)
    rows = []
    for model in sorted(set(stored) | set(api.analytics)):
        mine = stored.get(model, 0.0)
        theirs = api.analytics[model].usage if model in api.analytics else 0.0
        if not math.isclose(mine, theirs, rel_tol=COST_RELATIVE_TOLERANCE, abs_tol=COST_ABSOLUTE_TOLERANCE):
            rows.append([model, f"{mine:.6f}", f"{theirs:.6f}", f"{mine - theirs:+.6f}"])
    total_stored, total_api = sum(stored.values()), api.usage
    return Verdict(
        passed=not rows,
        description=f"{api.day}: stored usage ${total_stored:.6f} vs OpenRouter ${total_api:.6f}",
        metadata={"day": api.day.isoformat(), "stored_usage_usd": round(total_stored, 9),
                  "api_usage_usd": round(total_api, 9), "models_differing": len(rows),
                  "stored_total_cost_usd": round(sum(store.cost_by_model(api.day).values()), 9)},
        diff_markdown=_table(["model", "stored usage", "OpenRouter usage", "difference"], rows) if rows else None,
    )
