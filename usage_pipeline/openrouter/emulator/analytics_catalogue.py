"""What the emulated analytics API offers: its metrics, dimensions, operators and granularities.

One catalogue feeds query validation, the query engine and `GET /analytics/meta`, so the three can
never disagree about what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from usage_pipeline.openrouter.emulator.dataset import (
    API_KEYS, APPS, EXTERNAL_USERS, FINISH_REASONS, MEMBERS, MODELS, PROVIDERS, WORKSPACES,
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
    Metric("total_cost", "Total Cost", "currency", False, False),
    Metric("tokens_prompt", "Prompt Tokens", "number", False, True),
    Metric("tokens_completion", "Completion Tokens", "number", False, True),
    Metric("reasoning_tokens", "Reasoning Tokens", "number", False, True),
    Metric("cached_tokens", "Cached Tokens", "number", False, True),
    Metric("avg_latency", "Average Latency", "latency", True, False),
)}


@dataclass(frozen=True, slots=True)
class Category:
    """One value of a dimension: the label the API answers and the ids a filter may name it by."""

    label: str
    ids: frozenset[str]  # lower-cased
    sort_id: str


def _categories(rows: list[tuple[str, list[str], str]]) -> tuple[Category, ...]:
    return tuple(Category(label, frozenset(i.lower() for i in ids), sort_id) for label, ids, sort_id in rows)


CATEGORIES: dict[str, tuple[Category, ...]] = {
    "model": _categories([(m.slug, [m.slug, m.permaslug], m.slug) for m in MODELS]),
    "provider": _categories([(p, [p, p.replace(" ", "-")], p) for p in PROVIDERS]),
    "api_key_id": _categories([(k.label, [str(k.numeric_id), k.hash, k.label], str(k.numeric_id)) for k in API_KEYS]),
    "external_user": _categories([(u, [u], u) for u in EXTERNAL_USERS]),
    "finish_reason": _categories([(f, [f], f) for f in FINISH_REASONS]),
    "origin": _categories([(a.origin, [a.origin], a.origin) for a in APPS]),
    "app": _categories([(a.title, [str(a.app_id), a.title], str(a.app_id)) for a in APPS]),
    "user": _categories([(m.name, [m.clerk_id, m.name], m.clerk_id) for m in MEMBERS]),
    "workspace": _categories([(w.name, [w.workspace_id, w.name], w.workspace_id) for w in WORKSPACES]),
}
DIMENSION_LABELS: dict[str, str] = {
    "generation_id": "Generation ID", "model": "Model", "provider": "Provider", "api_key_id": "API Key",
    "external_user": "External User", "finish_reason": "Finish Reason", "origin": "Origin", "app": "App",
    "user": "User", "workspace": "Workspace",
}
RECENT_ONLY_DIMENSIONS = frozenset({"generation_id", "provider", "origin", "finish_reason", "external_user"})
GRANULARITIES: dict[str, str] = {"minute": "Minute", "hour": "Hour", "day": "Day", "week": "Week", "month": "Month"}
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
