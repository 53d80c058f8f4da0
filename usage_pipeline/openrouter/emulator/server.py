"""A local HTTP emulator of the OpenRouter usage API (`/api/v1`), faithful to the official spec.

OpenRouter cannot be reached from here, so the pipeline is tested against this server: same paths, same
auth rules, same response shapes and error bodies, the same lack of a generation listing, plus a
`/_emulator` control API that tells tests the ground truth and switches faults on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import numpy as np

from usage_pipeline.openrouter.emulator.dataset import (
    API_KEYS, APPS, BYOK, ENDPOINT_PROVIDER, ENDPOINTS, EPOCH, EXTERNAL_USERS, FINISH_REASONS, MEMBERS, MODELS,
    PROVIDERS, US_PER_DAY, US_PER_SECOND, WORKSPACES, DayColumns, UsageDataset, day_start_us, generation_record,
    utc_today,
)
from usage_pipeline.openrouter.emulator.faults import FaultPlan, FaultRule, SlidingWindowLimiter, error_body
from usage_pipeline.openrouter.generation import parse_created_at

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_emulator"
MAX_ANALYTICS_ROWS = 10_000


class ApiError(Exception):
    """An error answer in the spec's shape; `retry_after` becomes the `Retry-After` header."""

    def __init__(self, status: int, message: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(slots=True)
class RuntimeConfig:
    """The knobs tests may turn while the emulator runs (`POST /_emulator/config`)."""

    analytics_max_rows: int
    analytics_rpm: int
    fresh_404_seconds: float
    generation_404_first: int
    fault_rate: float
    slow_ms: int


# --- Analytics: metrics and dimensions -----------------------------------------------------------


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
_METRIC_COLUMNS = {"total_usage": "usage", "total_cost": "usage", "tokens_prompt": "tokens_prompt",
                   "tokens_completion": "tokens_completion", "reasoning_tokens": "tokens_reasoning",
                   "cached_tokens": "tokens_cached"}


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
_KEY_MEMBER = np.array([k.member for k in API_KEYS], dtype=np.int64)
_KEY_WORKSPACE = np.array([k.workspace for k in API_KEYS], dtype=np.int64)


class Selection:
    """The visible generations inside a half-open time range, across the days it touches."""

    def __init__(self, dataset: UsageDataset, start_us: int, end_us: int, now: float) -> None:
        self.parts: list[tuple[DayColumns, np.ndarray]] = []
        for date in dataset.dates(now):
            first = day_start_us(date)
            if first + US_PER_DAY <= start_us or first >= end_us:
                continue
            day = dataset.day(date, now)
            if day is None:
                continue
            c = day.columns
            lo, hi = np.searchsorted(c.created_us, [start_us, end_us], side="left")
            rows = lo + np.flatnonzero(c.visible_at[lo:hi] <= now)
            if len(rows):
                self.parts.append((c, rows))
        self.size = sum(len(rows) for _, rows in self.parts)
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            arrays = [getattr(c, name)[rows] for c, rows in self.parts]
            self._columns[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        return self._columns[name]

    def codes(self, dimension: str) -> np.ndarray:
        """Category codes of a dimension per row, -1 where the generation has no value."""
        if dimension == "model":
            return self.column("model").astype(np.int64)
        if dimension == "provider":
            return ENDPOINT_PROVIDER[self.column("endpoint")].astype(np.int64)
        if dimension == "api_key_id":
            return self.column("api_key").astype(np.int64)
        if dimension == "external_user":
            return self.column("external_user").astype(np.int64)
        if dimension == "finish_reason":
            return self.column("finish").astype(np.int64)
        if dimension in ("origin", "app"):
            return self.column("app").astype(np.int64)
        if dimension == "user":
            return _KEY_MEMBER[self.column("api_key")]
        if dimension == "workspace":
            return _KEY_WORKSPACE[self.column("api_key")]
        raise KeyError(dimension)

    def id_bytes(self) -> np.ndarray:
        """Every row's generation id as fixed-width bytes, for vectorised filtering and ordering."""
        if "id_bytes" not in self._columns:
            seconds = (self.column("created_us") // US_PER_SECOND).astype("S10")
            prefix = np.char.add(np.char.add(b"gen-", seconds), b"-")
            self._columns["id_bytes"] = np.char.add(prefix, self.column("id_suffix"))
        return self._columns["id_bytes"]

    def ids(self, positions: np.ndarray) -> list[str]:
        seconds = (self.column("created_us")[positions] // US_PER_SECOND).tolist()
        suffixes = self.column("id_suffix")[positions].tolist()
        return [f"gen-{s}-{x.decode()}" for s, x in zip(seconds, suffixes)]


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    operator: str
    values: tuple[str, ...]
    include_unset: bool


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filters: tuple[Filter, ...]
    granularity: str | None
    start_us: int
    end_us: int
    limit: int
    order_field: str | None
    order_direction: str


def _as_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ApiError(400, f"{where}: filter values must be strings or numbers")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _timestamp_us(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be an ISO 8601 date-time string")
    try:
        moment = parse_created_at(value)
    except ValueError:
        raise ApiError(400, f"{where} is not a valid ISO 8601 date-time: {value[:40]!r}") from None
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def parse_query(body: Any, now: float) -> AnalyticsQuery:
    """Validate a `POST /analytics/query` body the way the real API does (400 with a reason)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    metrics = body.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ApiError(400, "metrics: at least one metric name is required")
    for name in metrics:
        if name not in METRICS:
            raise ApiError(400, f"Unknown metric: {name!r}. See GET /api/v1/analytics/meta")
    dimensions = body.get("dimensions") or []
    if not isinstance(dimensions, list) or not all(isinstance(d, str) for d in dimensions):
        raise ApiError(400, "dimensions must be an array of dimension names")
    if len(dimensions) > 2:
        raise ApiError(400, "At most 2 dimensions may be requested")
    if len(set(dimensions)) != len(dimensions):
        raise ApiError(400, "dimensions must not repeat")
    for name in dimensions:
        if name not in DIMENSION_LABELS:
            raise ApiError(400, f"Unknown dimension: {name!r}. See GET /api/v1/analytics/meta")
    filters = _parse_filters(body.get("filters") or [])
    granularity = body.get("granularity")
    if granularity is not None and granularity not in GRANULARITIES:
        raise ApiError(400, f"Unknown granularity: {granularity!r}; use one of {', '.join(GRANULARITIES)}")
    now_us = int(now * US_PER_SECOND)
    time_range = body.get("time_range")
    if time_range is None:
        start_us, end_us = now_us - 7 * US_PER_DAY, now_us
    elif isinstance(time_range, dict) and "start" in time_range and "end" in time_range:
        start_us = _timestamp_us(time_range["start"], "time_range.start")
        end_us = _timestamp_us(time_range["end"], "time_range.end")
    else:
        raise ApiError(400, "time_range must be an object with start and end")
    if end_us <= start_us:
        raise ApiError(400, "time_range.end must be after time_range.start")
    if start_us < now_us - 365 * US_PER_DAY:
        raise ApiError(400, "time_range.start must be within the last 365 days")
    recent_only = sorted(RECENT_ONLY_DIMENSIONS & ({*dimensions} | {f.field for f in filters}))
    if recent_only and start_us < now_us - 31 * US_PER_DAY:
        raise ApiError(400, f"Dimension {recent_only[0]!r} is only available for time ranges within the last 31 days")
    if granularity == "minute" and end_us - start_us > 3 * 3600 * US_PER_SECOND:
        raise ApiError(400, "Minute granularity is only available for time ranges of 3 hours or less")
    limit = body.get("limit", 1000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ApiError(400, "limit must be a positive integer")
    order_field, direction = None, "desc"
    order_by = body.get("order_by")
    if order_by is not None:
        if not isinstance(order_by, dict) or order_by.get("direction") not in ("asc", "desc"):
            raise ApiError(400, "order_by needs a field and a direction of asc or desc")
        order_field, direction = order_by.get("field"), order_by["direction"]
        if order_field not in {*metrics, "request_count", *dimensions, "date"}:
            raise ApiError(400, f"order_by.field {order_field!r} must be a requested metric or dimension, "
                                "request_count or date")
    if body.get("classifier_dimensions") or body.get("classifier_filters"):
        raise ApiError(400, "No active classifier exists on this workspace")
    group_limit = body.get("group_limit")
    if group_limit is not None and (isinstance(group_limit, bool) or not isinstance(group_limit, int)):
        raise ApiError(400, "group_limit must be an integer")
    return AnalyticsQuery(tuple(metrics), tuple(dimensions), filters, granularity, start_us, end_us, limit,
                          order_field, direction)


def _parse_filters(raw: Any) -> tuple[Filter, ...]:
    if not isinstance(raw, list):
        raise ApiError(400, "filters must be an array")
    if len(raw) > 20:
        raise ApiError(400, "At most 20 filters may be given")
    parsed = []
    for i, item in enumerate(raw):
        where = f"filters[{i}]"
        if not isinstance(item, dict) or not {"field", "operator", "value"} <= item.keys():
            raise ApiError(400, f"{where} needs field, operator and value")
        field, operator, value = item["field"], item["operator"], item["value"]
        if field not in DIMENSION_LABELS:
            raise ApiError(400, f"{where}: unknown filter field {field!r}")
        if operator in ARRAY_OPERATORS:
            if not isinstance(value, list) or not value:
                raise ApiError(400, f"{where}: operator {operator} needs a non-empty array value")
            values = tuple(_as_text(v, where) for v in value)
        elif operator in SCALAR_OPERATORS:
            if isinstance(value, list):
                raise ApiError(400, f"{where}: operator {operator} needs a scalar value")
            values = (_as_text(value, where),)
        else:
            raise ApiError(400, f"{where}: unknown operator {operator!r}")
        parsed.append(Filter(field, operator, values, bool(item.get("include_unset", False))))
    return tuple(parsed)


def _compare(left: str, right: str, operator: str) -> bool:
    try:
        a: float | str = float(left)
        b: float | str = float(right)
    except ValueError:
        a, b = left, right
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[operator]  # type: ignore[operator]


def _filter_mask(selection: Selection, f: Filter, warnings: list[str]) -> np.ndarray:
    if f.field == "generation_id":
        ids = selection.id_bytes()
        wanted = np.array([v.encode() for v in f.values])
        if f.operator in ("eq", "in"):
            return np.isin(ids, wanted)
        if f.operator in ("neq", "not_in"):
            return ~np.isin(ids, wanted)
        bound = wanted[0]
        return {"gt": ids > bound, "gte": ids >= bound, "lt": ids < bound, "lte": ids <= bound}[f.operator]
    categories = CATEGORIES[f.field]
    values = [v.lower() for v in f.values]
    if f.field == "api_key_id":
        known = set().union(*(c.ids for c in categories))
        warnings.extend(f"Could not resolve api_key_id filter value {v!r}" for v in f.values if v.lower() not in known)
    if f.operator in SCALAR_OPERATORS[2:]:
        ok = [_compare(c.sort_id, f.values[0], f.operator) for c in categories]
    else:
        hit = [any(v in c.ids for v in values) for c in categories]
        ok = hit if f.operator in ("eq", "in") else [not h for h in hit]
    unset_ok = f.include_unset and f.operator in ARRAY_OPERATORS
    lookup = np.array(ok + [unset_ok], dtype=bool)  # code -1 (unset) reads the last entry
    return lookup[selection.codes(f.field)]


def _bucket_starts(created_us: np.ndarray, granularity: str) -> np.ndarray:
    if granularity == "week":  # ISO weeks start on Monday; 1970-01-01 was a Thursday
        days = created_us // US_PER_DAY
        return ((days + 3) // 7 * 7 - 3) * US_PER_DAY
    unit = {"minute": "m", "hour": "h", "day": "D", "month": "M"}[granularity]
    return created_us.astype("datetime64[us]").astype(f"datetime64[{unit}]").astype("datetime64[us]").astype(np.int64)


def _iso_ms(us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{us // 1000 % 1000:03d}Z"


def _dense_rank(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)


def run_query(dataset: UsageDataset, query: AnalyticsQuery, now: float, max_rows: int) -> dict[str, Any]:
    """Group the visible generations like the analytics backend: by time bucket and dimensions."""
    started = time.perf_counter()
    selection = Selection(dataset, query.start_us, query.end_us, now)
    warnings: list[str] = []
    positions = np.arange(selection.size)
    if selection.size:
        mask = np.ones(selection.size, dtype=bool)
        for f in query.filters:
            mask &= _filter_mask(selection, f, warnings)
        positions = np.flatnonzero(mask)
    limit = max(1, min(query.limit, max_rows, MAX_ANALYTICS_ROWS))
    rows: list[dict[str, Any]] = []
    truncated = False
    if len(positions):
        rows, truncated = _aggregate(selection, positions, query, limit)
    payload: dict[str, Any] = {"data": rows, "metadata": {
        "query_time_ms": round((time.perf_counter() - started) * 1000, 3), "row_count": len(rows),
        "truncated": truncated}}
    if warnings:
        payload["warnings"] = sorted(set(warnings))
    return {"data": payload}


def _aggregate(selection: Selection, positions: np.ndarray, query: AnalyticsQuery,
               limit: int) -> tuple[list[dict[str, Any]], bool]:
    created = selection.column("created_us")[positions]
    buckets = _bucket_starts(created, query.granularity) if query.granularity else None
    codes = {d: selection.codes(d)[positions] for d in query.dimensions if d != "generation_id"}
    if "generation_id" in query.dimensions:  # every generation is its own group
        inverse = np.arange(len(positions))
        first = inverse
        group_key = inverse
    else:
        key = np.zeros(len(positions), dtype=np.int64)
        if buckets is not None:
            key = _dense_rank(buckets)
        for d, c in codes.items():
            key = key * (len(CATEGORIES[d]) + 1) + (c + 1)
        group_key, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    groups = len(first)

    counts = np.bincount(inverse, minlength=groups).astype(np.float64)
    values: dict[str, np.ndarray] = {"request_count": counts}
    for name in query.metrics:
        if name == "byok_request_count":
            byok = (selection.column("flags")[positions] & BYOK) > 0
            values[name] = np.bincount(inverse, weights=byok, minlength=groups)
        elif name == "avg_latency":
            total = np.bincount(inverse, weights=selection.column("latency_ms")[positions], minlength=groups)
            values[name] = total / np.maximum(counts, 1)
        elif name in _METRIC_COLUMNS:
            column = selection.column(_METRIC_COLUMNS[name])[positions].astype(np.float64)
            values[name] = np.bincount(inverse, weights=column, minlength=groups)

    group_time = buckets[first] if buckets is not None else created[first]
    sort_keys: list[np.ndarray] = []  # primary first
    field = query.order_field
    if field is not None:
        if field == "date":
            primary = group_time.astype(np.float64)
        elif field in values:
            primary = values[field]
        elif field == "generation_id":
            primary = _dense_rank(selection.id_bytes()[positions[first]]).astype(np.float64)
        else:
            labels = np.array([c.label for c in CATEGORIES[field]] + ["\uffff"])
            primary = _dense_rank(labels[codes[field][first]]).astype(np.float64)
        sort_keys.append(-primary if query.order_direction == "desc" else primary)
    if buckets is not None:
        sort_keys.append(group_time)
    sort_keys += [-counts, np.asarray(group_key)]
    order = np.lexsort(sort_keys[::-1])
    truncated = groups > limit
    chosen = order[:limit]

    columns: list[tuple[str, list[Any]]] = []
    if buckets is not None:
        columns.append((f"date__{query.granularity}", [_iso_ms(int(us)) for us in group_time[chosen]]))
    for d in query.dimensions:
        if d == "generation_id":
            columns.append((d, selection.ids(positions[first[chosen]])))
        else:
            labels = [c.label for c in CATEGORIES[d]] + [None]
            columns.append((d, [labels[c] for c in codes[d][first[chosen]].tolist()]))
    for name in query.metrics:
        picked = values[name][chosen]
        if METRICS[name].is_count:
            columns.append((name, [str(v) for v in np.rint(picked).astype(np.int64).tolist()]))
        else:
            columns.append((name, picked.tolist()))
    names = [n for n, _ in columns]
    return [dict(zip(names, row)) for row in zip(*(v for _, v in columns))], truncated


def analytics_meta() -> dict[str, Any]:
    return {"data": {
        "metrics": [{"name": m.name, "display_label": m.label, "is_rate": m.is_rate,
                     "display_format": m.display_format} for m in METRICS.values()],
        "dimensions": [{"name": n, "display_label": label} for n, label in DIMENSION_LABELS.items()],
        "operators": [{"name": op, "value_type": "scalar"} for op in SCALAR_OPERATORS]
        + [{"name": op, "value_type": "array"} for op in ARRAY_OPERATORS],
        "granularities": [{"name": n, "display_label": label} for n, label in GRANULARITIES.items()],
    }}


# --- Activity, key, credits ----------------------------------------------------------------------


def _query_param(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def activity(dataset: UsageDataset, params: Mapping[str, list[str]], now: float) -> dict[str, Any]:
    """Rows per date x model x provider endpoint for the last 30 completed UTC days."""
    today = utc_today(now)
    allowed = [today - dt.timedelta(days=k) for k in range(30, 0, -1)]
    date_text = _query_param(params, "date")
    if date_text is not None:
        try:
            date = dt.date.fromisoformat(date_text)
        except ValueError:
            raise ApiError(400, "Invalid date format. Use YYYY-MM-DD") from None
        if date not in allowed:
            raise ApiError(400, "Date must be within the last 30 (completed) UTC days")
        dates = [date]
    else:
        dates = allowed
    group_by = _query_param(params, "group_by")
    if group_by not in (None, "workspace"):
        raise ApiError(400, "group_by must be 'workspace'")
    key_ok = np.ones(len(API_KEYS), dtype=bool)
    key_hash, user_id, workspace_id = (_query_param(params, n) for n in ("api_key_hash", "user_id", "workspace_id"))
    for i, key in enumerate(API_KEYS):
        key_ok[i] = ((key_hash is None or key.hash == key_hash.lower())
                     and (user_id is None or MEMBERS[key.member].clerk_id == user_id)
                     and (workspace_id is None or WORKSPACES[key.workspace].workspace_id == workspace_id))
    split = len(WORKSPACES) if group_by == "workspace" else 1
    items: list[dict[str, Any]] = []
    for date in dates:
        day = dataset.day(date, now)
        if day is None:
            continue
        c = day.columns
        rows = np.flatnonzero(day.visible(now) & key_ok[c.api_key])
        group = c.endpoint[rows].astype(np.int64) * split + (_KEY_WORKSPACE[c.api_key[rows]] if split > 1 else 0)
        size = len(ENDPOINTS) * split
        sums = {name: np.bincount(group, weights=weights, minlength=size) for name, weights in (
            ("usage", c.usage[rows]), ("prompt_tokens", c.tokens_prompt[rows].astype(np.float64)),
            ("completion_tokens", c.tokens_completion[rows].astype(np.float64)),
            ("reasoning_tokens", c.tokens_reasoning[rows].astype(np.float64)),
            ("byok_usage_inference", np.where((c.flags[rows] & BYOK) > 0, np.nan_to_num(c.upstream_cost[rows]), 0.0)))}
        requests = np.bincount(group, minlength=size)
        for g in np.flatnonzero(requests):
            endpoint = ENDPOINTS[g // split]
            model = MODELS[endpoint.model]
            item: dict[str, Any] = {
                "date": date.isoformat(), "model": model.slug, "model_permaslug": model.permaslug,
                "endpoint_id": endpoint.endpoint_id, "provider_name": endpoint.provider,
                "usage": float(sums["usage"][g]), "byok_usage_inference": float(sums["byok_usage_inference"][g]),
                "requests": int(requests[g]), "prompt_tokens": int(sums["prompt_tokens"][g]),
                "completion_tokens": int(sums["completion_tokens"][g]),
                "reasoning_tokens": int(sums["reasoning_tokens"][g]),
            }
            if split > 1:
                item["workspace_id"] = WORKSPACES[g % split].workspace_id
            items.append(item)
    return {"data": items}


def _usage_since(dataset: UsageDataset, since: dt.date, now: float) -> tuple[float, float]:
    """(OpenRouter usage, BYOK upstream usage) of the days built so far, from `since` on."""
    usage = byok = 0.0
    for date in dataset.dates(now):
        day = dataset.built_day(date)
        if date >= since and day is not None:
            visible = day.visible(now)
            usage += float(day.columns.usage[visible].sum())
            byok += float(np.nansum(day.columns.upstream_cost[visible]))
    return usage, byok


def key_info(dataset: UsageDataset, key: str, management: bool, now: float) -> dict[str, Any]:
    digest = hashlib.sha256(key.encode()).hexdigest()
    today = utc_today(now)
    periods = {"": dt.date.min, "_daily": today, "_weekly": today - dt.timedelta(days=today.weekday()),
               "_monthly": today.replace(day=1)}
    data: dict[str, Any] = {
        "label": f"sk-or-v1-{digest[:3]}...{digest[-4:]}", "limit": None, "limit_remaining": None,
        "limit_reset": None, "include_byok_in_limit": False, "is_free_tier": False,
        "is_management_key": management, "is_provisioning_key": management, "creator_user_id": MEMBERS[0].clerk_id,
        "expires_at": None,
        "rate_limit": {"requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."},
    }
    for suffix, since in periods.items():
        usage, byok = (0.0, 0.0) if management else _usage_since(dataset, since, now)
        data[f"usage{suffix}"] = usage
        data[f"byok_usage{suffix}"] = byok
    return {"data": data}


def credits_info(dataset: UsageDataset, now: float) -> dict[str, Any]:
    usage = 1843.27 + _usage_since(dataset, dt.date.min, now)[0]  # spend from before the emulated days
    return {"data": {"total_credits": float(500 * math.ceil(usage / 500) + 2000), "total_usage": usage}}


# --- The emulator: routing, auth, faults, control API ------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # below /api/v1 or /_emulator
    params: dict[str, list[str]]
    body: bytes
    key: str | None = None
    management: bool = False

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(400, "Request body is not valid JSON") from None


@dataclass(slots=True)
class Response:
    status: int
    payload: Any
    headers: dict[str, str]


def _error_response(error: ApiError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return Response(error.status, error_body(error.status, error.message), headers)


class Emulator:
    """All state behind the HTTP server; `handle` is pure request in, response out (thread-safe)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.started_at = time.time()
        self.management_key: str = args.management_key
        self.inference_key: str = args.inference_key
        self.dataset = UsageDataset(seed=args.seed, generations_per_day=args.generations_per_day, days=args.days,
                                    late_generations=args.late_generations,
                                    late_visible_at=self.started_at + args.late_after)
        self.config = RuntimeConfig(args.analytics_max_rows, args.analytics_rpm, args.fresh_404_seconds,
                                    args.generation_404_first, args.fault_rate, args.slow_ms)
        self.faults = FaultPlan(seed=args.seed, fault_rate=args.fault_rate)
        self.limiter = SlidingWindowLimiter(args.analytics_rpm)
        self._lock = threading.Lock()
        self._gets: dict[str, int] = {}
        self._by_path: dict[str, dict[str, int]] = {}
        self._api_routes: dict[tuple[str, str], tuple[bool, Callable[[Request, float], Any]]] = {
            ("GET", "/activity"): (True, lambda r, now: activity(self.dataset, r.params, now)),
            ("GET", "/analytics/meta"): (True, lambda r, now: analytics_meta()),
            ("POST", "/analytics/query"): (True, lambda r, now: run_query(
                self.dataset, parse_query(r.json(), now), now, self.config.analytics_max_rows)),
            ("GET", "/credits"): (True, lambda r, now: credits_info(self.dataset, now)),
            ("GET", "/generation"): (False, self._generation),
            ("GET", "/key"): (False, lambda r, now: key_info(self.dataset, r.key or "", r.management, now)),
        }
        self._control_routes: dict[tuple[str, str], Callable[[Request, float], Any]] = {
            ("GET", "/truth"): self._truth,
            ("GET", "/faults"): lambda r, now: {"rules": self.faults.rules()},
            ("POST", "/faults"): self._set_faults,
            ("DELETE", "/faults"): lambda r, now: self._clear_faults(),
            ("GET", "/stats"): lambda r, now: self.stats(),
            ("DELETE", "/stats"): lambda r, now: self._reset_stats(),
            ("POST", "/generations"): self._add_generations,
            ("GET", "/config"): lambda r, now: asdict(self.config),
            ("POST", "/config"): self._set_config,
        }

    # -- dispatch --

    def handle(self, method: str, target: str, authorization: str | None, body: bytes) -> Response:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        params = parse_qs(url.query, keep_blank_values=True)
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self._control(Request(method, path[len(CONTROL_PREFIX):] or "/", params, body))
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            sub = path[len(API_PREFIX):] or "/"
            response = self._api(Request(method, sub, params, body), authorization)
            self._count(sub, response.status)
            return response
        return Response(404, error_body(404, "Not Found"), {})

    def _control(self, request: Request) -> Response:
        handler = self._control_routes.get((request.method, request.path))
        if handler is None:
            return Response(404, error_body(404, f"No control endpoint {request.method} {request.path}"), {})
        try:
            return Response(200, handler(request, time.time()), {})
        except ApiError as error:
            return _error_response(error)

    def _api(self, request: Request, authorization: str | None) -> Response:
        if self.config.slow_ms > 0:
            time.sleep(self.config.slow_ms / 1000)
        fault = self.faults.next_fault(request.path)
        if fault is not None:
            if fault.delay_ms > 0:
                time.sleep(fault.delay_ms / 1000)
            if fault.status is not None:
                return _error_response(ApiError(fault.status, retry_after=fault.retry_after))
        route = self._api_routes.get((request.method, request.path))
        if route is None:
            return Response(404, error_body(404, "Not Found"), {})
        management_only, handler = route
        try:
            key, management = self._authenticate(authorization)
            if management_only and not management:
                raise ApiError(403, "Only management keys can perform this operation")
            if request.path.startswith("/analytics/"):
                wait = self.limiter.acquire(hashlib.sha256(key.encode()).hexdigest())
                if wait is not None:
                    raise ApiError(429, "Rate limit exceeded", retry_after=wait)
            authed = Request(request.method, request.path, request.params, request.body, key, management)
            return Response(200, handler(authed, time.time()), {})
        except ApiError as error:
            return _error_response(error)

    def _authenticate(self, authorization: str | None) -> tuple[str, bool]:
        """(key, is management key); the key itself never appears in any message or log."""
        if not authorization:
            raise ApiError(401, "Missing Authentication header")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "Missing Authentication header")
        if key == self.management_key:
            return key, True
        if key == self.inference_key:
            return key, False
        raise ApiError(401, "User not found.")

    # -- /generation --

    def _generation(self, request: Request, now: float) -> Any:
        gen_id = _query_param(request.params, "id")
        if not gen_id:
            raise ApiError(400, "Missing required query parameter: id")
        first_404 = self.config.generation_404_first
        if first_404 > 0:
            with self._lock:
                seen = self._gets[gen_id] = self._gets.get(gen_id, 0) + 1
            if seen <= first_404:
                raise ApiError(404, f"Generation {gen_id} not found")
        found = self.dataset.find(gen_id, now)
        if found is None:
            raise ApiError(404, f"Generation {gen_id} not found")
        day, row = found
        created_s = int(day.columns.created_us[row]) / US_PER_SECOND
        if day.columns.visible_at[row] > now or now - created_s < self.config.fresh_404_seconds:
            raise ApiError(404, f"Generation {gen_id} not found")
        return {"data": generation_record(day, row)}

    # -- control --

    def _truth(self, request: Request, now: float) -> Any:
        return self.dataset.truth(_control_date(_query_param(request.params, "date")), now)

    def _set_faults(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            raise ApiError(400, 'body must be {"rules": [...]}')
        try:
            rules = [FaultRule.from_json(r) for r in body["rules"]]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ApiError(400, f"bad fault rule: {exc}") from None
        if body.get("append"):
            self.faults.add_rules(rules)
        else:
            self.faults.replace_rules(rules)
        return {"rules": self.faults.rules()}

    def _clear_faults(self) -> Any:
        self.faults.replace_rules([])
        return {"rules": []}

    def _add_generations(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, 'body must be {"date": "YYYY-MM-DD", "count": n, "at"?: ISO date-time}')
        date = _control_date(body.get("date"))
        count = body.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise ApiError(400, "count must be an integer from 1 to 1,000,000")
        at = body.get("at")
        try:
            at_us = None if at is None else int(
                (parse_created_at(str(at)) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) / dt.timedelta(microseconds=1))
            ids = self.dataset.add_generations(date, count, now, at_us)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {"date": date.isoformat(), "count": len(ids), "ids": ids}

    def _set_config(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object of settings")
        current = asdict(self.config)
        unknown = set(body) - set(current)
        if unknown:
            raise ApiError(400, f"unknown settings: {sorted(unknown)}; known: {sorted(current)}")
        for name, value in body.items():
            kind = type(current[name])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ApiError(400, f"{name} must be a non-negative number")
            setattr(self.config, name, kind(value))
        if "generation_404_first" in body:
            with self._lock:
                self._gets.clear()  # "the first N GETs" count from now on
        self.config.analytics_max_rows = max(1, self.config.analytics_max_rows)
        self.limiter.per_minute = self.config.analytics_rpm
        self.faults.fault_rate = self.config.fault_rate
        return asdict(self.config)

    def _count(self, path: str, status: int) -> None:
        with self._lock:
            by_status = self._by_path.setdefault(path, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_path = {p: dict(s) for p, s in self._by_path.items()}
        by_status: dict[str, int] = {}
        for statuses in by_path.values():
            for status, n in statuses.items():
                by_status[status] = by_status.get(status, 0) + n
        return {"total": sum(by_status.values()), "by_path": {p: sum(s.values()) for p, s in by_path.items()},
                "by_status": by_status, "by_path_status": by_path}

    def _reset_stats(self) -> Any:
        with self._lock:
            self._by_path.clear()
        return self.stats()


def _control_date(value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, "date must be YYYY-MM-DD") from None


# --- HTTP ----------------------------------------------------------------------------------------


class EmulatorHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive front of `Emulator.handle`; logs no requests, so no key can leak."""

    protocol_version = "HTTP/1.1"
    server_version = "OpenRouterEmulator/1.0"
    disable_nagle_algorithm = True
    emulator: Emulator  # set on the subclass made by `make_server`

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        try:
            if length < 0:
                self.close_connection = True  # the body cannot be skipped, so the connection cannot be reused
                response = Response(400, error_body(400, "Invalid Content-Length header"), {})
            else:
                body = self.rfile.read(length) if length else b""
                response = self.emulator.handle(self.command, self.path, self.headers.get("Authorization"), body)
        except Exception:  # noqa: BLE001 - an emulator bug must still answer in the spec's shape
            traceback.print_exc(file=sys.stderr)
            response = Response(500, error_body(500), {})
        data = json.dumps(response.payload, separators=(",", ":"), allow_nan=False).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        return


def make_server(args: argparse.Namespace) -> ThreadingHTTPServer:
    emulator = Emulator(args)
    handler = type("BoundEmulatorHandler", (EmulatorHandler,), {"emulator": emulator})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    return server


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags; `usage-pipeline emulator` and `python -m ...server` share them."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--seed", type=int, default=7, help="same seed, same generations for a UTC day")
    parser.add_argument("--generations-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=3, help="completed UTC days before today (plus today so far)")
    parser.add_argument("--management-key", default="emulator-management-key")
    parser.add_argument("--inference-key", default="emulator-inference-key")
    parser.add_argument("--analytics-max-rows", type=int, default=MAX_ANALYTICS_ROWS,
                        help="server-side row cap; effective limit = min(requested, this, 10000)")
    parser.add_argument("--analytics-rpm", type=int, default=64, help="analytics requests per key per 60 s; 0: off")
    parser.add_argument("--fresh-404-seconds", type=float, default=5.0,
                        help="GET /generation answers 404 this long after created_at")
    parser.add_argument("--generation-404-first", type=int, default=0, help="first N GETs of each id answer 404")
    parser.add_argument("--late-generations", type=int, default=0,
                        help="extra generations per completed day that appear only after --late-after seconds")
    parser.add_argument("--late-after", type=float, default=30.0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="probability of a random 5xx per request")
    parser.add_argument("--slow-ms", type=int, default=0, help="added latency per /api/v1 request")


def serve_from_args(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    server = make_server(args)
    host, port = server.server_address[:2]
    print(f"OpenRouter emulator listening on http://{host}:{port}{API_PREFIX} "
          f"(seed {args.seed}, {args.generations_per_day} generations/day, {args.days} days)", flush=True)
    stop = threading.Event()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    except ValueError:  # not the main thread: the caller owns signals
        pass
    worker = threading.Thread(target=server.serve_forever, name="emulator-http", daemon=True)
    worker.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        print("OpenRouter emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local emulator of the OpenRouter usage API")
    add_cli_arguments(parser)
    serve_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
