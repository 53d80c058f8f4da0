"""The body of `POST /analytics/query`, validated the way the real API does.

Parsing is kept apart from the engine so every 400 and its reason lives in one place and the engine
only ever sees a well-formed `AnalyticsQuery`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from openrouter_emulator.analytics_catalogue import (
    ARRAY_OPERATORS,
    DIMENSION_LABELS,
    GRANULARITIES,
    METRICS,
    RECENT_ONLY_DIMENSIONS,
    SCALAR_OPERATORS,
)
from openrouter_emulator.history import MAX_HISTORY_DAYS
from openrouter_emulator.isotime import US_PER_DAY, US_PER_SECOND, day_start_us, parse_iso8601, to_epoch_us, utc_today
from openrouter_emulator.protocol import ApiError


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
        moment = parse_iso8601(value)
    except ValueError:
        raise ApiError(400, f"{where} is not a valid ISO 8601 date-time: {value[:40]!r}") from None
    return to_epoch_us(moment)


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
    # Retention is by date: 00:00 UTC of (today - 365 days) on, so the 365 completed days before today are whole.
    if start_us < day_start_us(utc_today(now) - dt.timedelta(days=MAX_HISTORY_DAYS)):
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
