"""The ledger's proofs for a day: no duplicates, full capture against OpenRouter's counts, cost agreement.

Plain functions returning `Verdict`s, so the Dagster checks stay thin and tests call them directly.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.counts import ApiDayCounts, Usage
from usage_pipeline.openrouter.model_names import ModelIdentity

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
    """Every stored point of the day is a distinct generation: points == distinct generation_ids. A failure
    names the ids stored twice: where the server has DELETE a rerun repairs them, on InfluxDB 3 they stay."""
    counts = store.day_counts(day)
    extra = counts.points - counts.distinct_ids
    twice = store.duplicated_ids(day) if extra else {}
    named = ", ".join(f"{gen_id} ({points} points)" for gen_id, points in list(twice.items())[:5])
    return Verdict(
        passed=extra == 0,
        description=(f"{day}: {counts.points} points, {counts.distinct_ids} distinct generation ids"
                     + ("" if extra == 0 else f": {extra} duplicate point(s) of {len(twice)} id(s): {named}")),
        metadata={"day": day.isoformat(), "points": counts.points, "distinct_generation_ids": counts.distinct_ids,
                  "duplicate_points": extra, **({"duplicated_ids": ", ".join(list(twice)[:20])} if twice else {})},
    )


def _labels_table(api: ApiDayCounts) -> str:
    rows = [[label, u.requests, f"{u.usage:.6f}"] for label, u in sorted(api.by_label.items())]
    return _table(["analytics model label (not matched by name)", "requests", "usage USD"], rows)


@dataclass(frozen=True)
class ModelSides:
    """Stored and /activity figures per model identity (the permaslug where known), and how each is named."""

    stored: dict[str, float]
    activity: dict[str, float]
    identities: dict[str, ModelIdentity]
    stored_as: dict[str, list[str]]  # key -> the names the ledger holds for it, as `/generation` sent them


def model_sides(api: ApiDayCounts, stored: Mapping[str, float], value: Callable[[Usage], float]) -> ModelSides:
    """Group the ledger's per-model figures and /activity's by the identity both resolve to."""
    catalogue = api.catalogue
    catalogue.hold(stored)
    sides = ModelSides({}, {}, {}, {})
    for name, figure in stored.items():
        identity = catalogue.resolve(name)
        sides.stored[identity.key] = sides.stored.get(identity.key, 0) + figure
        sides.identities.setdefault(identity.key, identity)
        sides.stored_as.setdefault(identity.key, []).append(name)
    for (slug, permaslug), usage in (api.activity or {}).items():
        identity = catalogue.activity_key(slug, permaslug)
        sides.activity[identity.key] = sides.activity.get(identity.key, 0) + value(usage)
        sides.identities.setdefault(identity.key, identity)
    return sides


def model_names(api: ApiDayCounts, stored_names: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """Each stored model name -> its permaslug (the compared key), slug and label, for the summaries."""
    api.catalogue.hold(stored_names)
    named = {}
    for name in stored_names:
        identity = api.catalogue.resolve(name)
        named[name] = {"permaslug": identity.key, "slug": identity.slug, "label": identity.label}
    return named


def _named(sides: ModelSides, key: str) -> list[Any]:
    identity = sides.identities[key]
    return [key, identity.slug or "-", identity.label or "-", ", ".join(sorted(sides.stored_as.get(key, []))) or "-"]


def full_capture(store: InfluxStore, api: ApiDayCounts) -> Verdict:
    """The day's distinct stored ids == OpenRouter's count, exactly: analytics' total, and /activity's total
    and per-model counts when the day is inside its window. Models are compared on their permaslug (the
    name `/generation` gives on the live API; a slug is resolved through GET /models and /activity), with
    the slug and label shown beside; a name no source knows is compared as its exact string.

    Analytics names models by label, so its per-model figures are shown beside, never compared by name.
    """
    stored = store.ids_by_model(api.day)
    total = sum(stored.values())
    totals = {"analytics": api.requests}
    if api.activity is not None:
        totals["activity"] = sum(u.requests for u in api.activity.values())
    rows: list[list[Any]] = []
    differing: list[str] = []
    if api.activity is not None:
        sides = model_sides(api, stored, lambda u: u.requests)
        for key in sorted(set(sides.stored) | set(sides.activity)):
            mine, theirs = int(sides.stored.get(key, 0)), int(sides.activity.get(key, 0))
            if mine != theirs:
                rows.append([*_named(sides, key), mine, theirs, mine - theirs])
                differing.append(f"{sides.identities[key].shown()} stored {mine}, activity {theirs}")
    totals_differ = {name: n for name, n in totals.items() if n != total}
    metadata: dict[str, Any] = {
        "day": api.day.isoformat(),
        "stored_distinct_ids": total,
        "api_request_count": api.requests,
        "api_usage_usd": api.usage,  # exact, as OpenRouter answered: duckdb/daily_usage stores it
        "models": len(stored),
        "activity_checked": api.activity is not None,
        "analytics_labels": len(api.by_label),
        "model_names": model_names(api, stored),  # duckdb/daily_usage shows slug and label beside the model
    }
    if "activity" in totals:
        metadata["activity_requests"] = totals["activity"]
    diff = None
    if rows or totals_differ:
        lines = [f"stored {total} vs " + ", ".join(f"{name} {n}" for name, n in totals.items())]
        if rows:
            lines.append(_table(["permaslug", "slug", "label", "stored as", "stored", "activity",
                                 "stored - activity"], rows))
            metadata["models_differing"] = len(rows)
        elif api.activity is None:
            lines.append("(the day is outside /activity's 30-day window: no per-model counts)")
        lines.append(_labels_table(api))
        diff = "\n\n".join(lines)
    passed = not rows and not totals_differ
    return Verdict(
        passed=passed,
        description=(f"{api.day}: {total} generations stored, matching OpenRouter's count"
                     + (" for every model" if api.activity is not None else "")
                     if passed else f"{api.day}: stored {total} generations, OpenRouter counts "
                     + ", ".join(f"{n} ({name})" for name, n in totals.items())
                     + (f"; {len(rows)} model(s) differ: " + "; ".join(differing[:5]) if rows else "")),
        metadata=metadata,
        diff_markdown=diff,
    )


def cost_agrees(store: InfluxStore, api: ApiDayCounts) -> Verdict:
    """Stored `usage` (credits charged) vs analytics' `total_usage` for the day, and per model (by
    permaslug, as `full_capture`) vs /activity's `usage` when the day is inside its window."""
    stored = store.usage_by_model(api.day)
    total_stored = sum(stored.values())
    rows = []
    if not _close(total_stored, api.usage):
        rows.append(["(all models, analytics)", "-", "-", "-", f"{total_stored:.6f}", f"{api.usage:.6f}",
                     f"{total_stored - api.usage:+.6f}"])
    if api.activity is not None:
        sides = model_sides(api, stored, lambda u: u.usage)
        for key in sorted(set(sides.stored) | set(sides.activity)):
            mine, theirs = sides.stored.get(key, 0.0), sides.activity.get(key, 0.0)
            if not _close(mine, theirs):
                rows.append([*_named(sides, key), f"{mine:.6f}", f"{theirs:.6f}", f"{mine - theirs:+.6f}"])
    return Verdict(
        passed=not rows,
        description=f"{api.day}: stored usage ${total_stored:.6f} vs OpenRouter ${api.usage:.6f}",
        metadata={"day": api.day.isoformat(), "stored_usage_usd": round(total_stored, 9),
                  "api_usage_usd": round(api.usage, 9), "models_differing": len(rows),
                  "stored_total_cost_usd": round(sum(store.cost_by_model(api.day).values()), 9)},
        diff_markdown=_table(["permaslug", "slug", "label", "stored as", "stored usage", "OpenRouter usage",
                              "difference"], rows) if rows else None,
    )


def _close(mine: float, theirs: float) -> bool:
    return math.isclose(mine, theirs, rel_tol=COST_RELATIVE_TOLERANCE, abs_tol=COST_ABSOLUTE_TOLERANCE)
