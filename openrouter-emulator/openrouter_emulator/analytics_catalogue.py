"""What the emulated analytics API offers: its metrics, dimensions, operators and granularities.

One catalogue feeds query validation, the query engine and `GET /analytics/meta`, so the three can
never disagree about what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from openrouter_emulator.organisation import (
    API_KEYS,
    APPS,
    EXTERNAL_USERS,
    FINISH_REASONS,
    MEMBERS,
    MODELS,
    PROVIDERS,
    WORKSPACES,
)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    label: str
    display_format: str
    is_rate: bool
    is_count: bool  # counts are serialised as strings, like the real API does


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("request_count", "Request Count", "number", False, True),
    Metric("byok_request_count", "BYOK Request Count", "number", False, True),
    Metric("total_usage", "Total Usage", "currency", False, False),
    Metric("tokens_total", "Total Tokens", "number", False, True),
    Metric("tokens_prompt", "Prompt Tokens", "number", False, True),
    Metric("tokens_completion", "Completion Tokens", "number", False, True),
    Metric("reasoning_tokens", "Reasoning Tokens", "number", False, True),
    Metric("cached_tokens", "Cached Tokens", "number", False, True),
    Metric("avg_latency", "Average Latency", "latency", True, False),
)}


@dataclass(frozen=True, slots=True)
class Category:
    """One value of a dimension: what the API answers for it and the ids a filter may name it by.

    OpenRouter enriches `model`, `api_key_id`, `user`, `workspace` and `app` in answers (a human-readable
    `label`) while filters must use the underlying id; `raw` is what a server without that enrichment
    answers (`analytics_labels` off). The other dimensions answer and filter by the same value.
    """

    label: str
    raw: str
    ids: frozenset[str]  # lower-cased filter values that select this category
    sort_id: str

    def shown(self, labels: bool) -> str:
        return self.label if labels else self.raw


def _categories(rows: list[tuple[str, str, list[str], str]]) -> tuple[Category, ...]:
    return tuple(Category(label, raw, frozenset(i.lower() for i in ids), sort_id) for label, raw, ids, sort_id in rows)


CATEGORIES: dict[str, tuple[Category, ...]] = {
    "model": _categories([(m.name, m.permaslug, [m.slug, m.permaslug], m.slug) for m in MODELS]),
    "provider": _categories([(p, p, [p, p.replace(" ", "-")], p) for p in PROVIDERS]),
    "api_key_id": _categories([(k.label, k.hash, [str(k.numeric_id), k.hash], str(k.numeric_id)) for k in API_KEYS]),
    "external_user": _categories([(u, u, [u], u) for u in EXTERNAL_USERS]),
    "finish_reason": _categories([(f, f, [f], f) for f in FINISH_REASONS]),
    "origin": _categories([(a.origin, a.origin, [a.origin], a.origin) for a in APPS]),
    "app": _categories([(a.title, str(a.app_id), [str(a.app_id)], str(a.app_id)) for a in APPS]),
    "user": _categories([(m.name, m.clerk_id, [m.clerk_id], m.clerk_id) for m in MEMBERS]),
    "workspace": _categories([(w.name, w.workspace_id, [w.workspace_id], w.workspace_id) for w in WORKSPACES]),
}
# Dimensions whose filters take only underlying ids: a label (or anything else unknown) is not resolved.
ENRICHED_DIMENSIONS = frozenset({"model", "api_key_id", "app", "user", "workspace"})
DIMENSION_LABELS: dict[str, str] = {
    "generation_id": "Generation ID", "model": "Model", "provider": "Provider", "api_key_id": "API Key",
    "external_user": "External User", "finish_reason": "Finish Reason", "origin": "Origin", "app": "App",
    "user": "User", "workspace": "Workspace",
}
RECENT_ONLY_DIMENSIONS = frozenset({"generation_id", "provider", "origin", "finish_reason", "external_user"})
GRANULARITIES: dict[str, str] = {"minute": "Minute", "hour": "Hour", "day": "Day", "week": "Week", "month": "Month"}
# What reaches the aggregate-only history days: the 365-day dimensions, at day granularity or coarser.
HISTORY_DIMENSIONS = frozenset(DIMENSION_LABELS) - RECENT_ONLY_DIMENSIONS
HISTORY_GRANULARITIES = (None, "day", "week", "month")
SCALAR_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte")
ARRAY_OPERATORS = ("in", "not_in")
# The "user" and "workspace" category codes of each API key, indexed by key code.
KEY_MEMBER = np.array([k.member for k in API_KEYS], dtype=np.int64)
KEY_WORKSPACE = np.array([k.workspace for k in API_KEYS], dtype=np.int64)


def analytics_meta() -> dict[str, Any]:
    return {"data": {
        "metrics": [{"name": m.name, "display_label": m.label, "is_rate": m.is_rate,
                     "display_format": m.display_format} for m in METRICS.values()],
        "dimensions": [{"name": n, "display_label": label} for n, label in DIMENSION_LABELS.items()],
        "operators": [{"name": op, "value_type": "scalar"} for op in SCALAR_OPERATORS]
        + [{"name": op, "value_type": "array"} for op in ARRAY_OPERATORS],
        "granularities": [{"name": n, "display_label": label} for n, label in GRANULARITIES.items()],
    }}
