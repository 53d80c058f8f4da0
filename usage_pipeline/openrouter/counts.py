"""OpenRouter's own counts for a day, the yardstick of the full-capture and cost checks. Analytics gives the
day's exact total, but per model label, which is only shown; `/activity` names models by slug and permaslug,
so per-model comparisons use it (within its 30-day window)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter import analytics_values
from usage_pipeline.openrouter.analytics_values import read_as, shown
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.generation import parse_created_at
from usage_pipeline.openrouter.model_names import ModelCatalogue, read_model_names
from usage_pipeline.openrouter.source import OpenRouterClient

ACTIVITY_WINDOW_DAYS = 30
ActivityModel = tuple[str, str | None]  # an /activity row's (model slug, model_permaslug)
Figures = tuple[str, str, str, str]  # the names of a row's requests, USD, prompt and completion tokens
ANALYTICS_FIGURES: Figures = ("request_count", "total_usage", "tokens_prompt", "tokens_completion")
ACTIVITY_FIGURES: Figures = ("requests", "usage", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Usage:
    requests: int
    usage: float  # USD
    tokens_prompt: int
    tokens_completion: int


@dataclass(frozen=True)
class ApiDayCounts:
    day: dt.date
    total: Usage  # analytics, exact for the day
    by_label: dict[str, Usage]  # analytics per model *label*: for people to read, never an identity
    activity: dict[ActivityModel, Usage] | None  # /activity per (slug, permaslug), inside its window
    catalogue: ModelCatalogue  # GET /models and the day's /activity names: how stored models compare

    @property
    def requests(self) -> int:
        return self.total.requests

    @property
    def usage(self) -> float:
        return self.total.usage


def _int(value: object) -> int:
    """A count as analytics and /activity send it (a digit string or an integer); absent means zero."""
    return read_as(OpenRouterError, "a count ", analytics_values.count, value) or 0


def _float(value: object) -> float:
    """Money as sent (a JSON number); absent means zero."""
    return 0.0 if value is None else read_as(OpenRouterError, "an amount of USD ", analytics_values.money, value)


def _usage(row: dict[str, Any], names: Figures) -> Usage:
    requests, usd, prompt, completion = (row.get(name) for name in names)
    return Usage(_int(requests), _float(usd), _int(prompt), _int(completion))


def activity_date(row: dict[str, Any]) -> dt.date:
    """The day of an /activity row: `2026-06-12 00:00:00` (live), `2026-06-12` (spec) or an ISO date-time
    at midnight UTC; OpenRouterError naming the value otherwise."""
    value = row.get("date")
    if not isinstance(value, str):
        raise OpenRouterError(f"GET /activity: row date must be a string, got {shown(value)}")
    try:
        moment = parse_created_at(value)
    except (ValueError, OverflowError):
        raise OpenRouterError(f"GET /activity: row date {value[:40]!r} is not a date") from None
    if moment.time() != dt.time():
        raise OpenRouterError(f"GET /activity: row date {value[:40]!r} is not a UTC midnight")
    return moment.date()


def _activity_model(row: dict[str, Any]) -> ActivityModel:
    slug, permaslug = row.get("model"), row.get("model_permaslug")
    if not isinstance(slug, str) or not slug:
        raise OpenRouterError(f"GET /activity: row model must be a non-empty string, got {shown(slug)}")
    if permaslug is not None and not isinstance(permaslug, str):
        raise OpenRouterError(f"GET /activity: row model_permaslug must be a string, got {shown(permaslug)}")
    return slug, permaslug or None


def _sum(rows: list[Usage]) -> Usage:
    return Usage(sum(r.requests for r in rows), sum(r.usage for r in rows),
                 sum(r.tokens_prompt for r in rows), sum(r.tokens_completion for r in rows))


def api_day_counts(client: OpenRouterClient, day: dt.date, today: dt.date | None = None) -> ApiDayCounts:
    start, end = day_bounds(day)
    result = client.analytics(metrics=ANALYTICS_FIGURES, dimensions=["model"], granularity="day", start=start, end=end)
    if result.truncated:
        raise OpenRouterError(f"per-model analytics for {day} came back truncated")
    by_label: dict[str, list[Usage]] = {}
    for row in result.rows:
        bucket = read_as(OpenRouterError, "day request_count row: ", analytics_values.bucket_start, row, "day")
        if bucket is None:
            raise OpenRouterError(f"day request_count row without a time bucket: {sorted(row)}")
        if bucket == start:  # not the next day's first instant, from a server whose end bound is inclusive
            by_label.setdefault(str(row.get("model")), []).append(_usage(row, ANALYTICS_FIGURES))
    labels = {label: _sum(rows) for label, rows in by_label.items()}
    today = today or dt.datetime.now(dt.UTC).date()
    in_activity_window = today - dt.timedelta(days=ACTIVITY_WINDOW_DAYS) <= day < today
    activity = _activity(client, day) if in_activity_window else None
    catalogue = ModelCatalogue(read_model_names(client), activity or {})
    return ApiDayCounts(day, _sum(list(labels.values())), labels, activity, catalogue)


def _activity(client: OpenRouterClient, day: dt.date) -> dict[ActivityModel, Usage]:
    per_model: dict[ActivityModel, list[Usage]] = {}
    for row in client.activity(day):
        if not isinstance(row, dict):
            raise OpenRouterError(f"GET /activity: row is not a JSON object, got {shown(row)}")
        if activity_date(row) == day:
            per_model.setdefault(_activity_model(row), []).append(_usage(row, ACTIVITY_FIGURES))
    return {model: _sum(rows) for model, rows in per_model.items()}
