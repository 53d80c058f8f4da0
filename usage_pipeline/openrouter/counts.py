"""OpenRouter's own counts for a day, the yardstick of the full-capture and cost checks.

Two sources, never joined by name. Analytics gives the day's exact total; its `model` dimension comes
back as human-readable labels ("OpenAI: GPT-4.1"), so per-label figures are shown but never matched to
stored models. `/activity` names each model by slug and permaslug, so per-model comparisons use it, within
its 30-day window, through the `ModelCatalogue` (read with `GET /models` here): `GET /generation` names
models by permaslug on the live API, by slug in older records.

`/activity`'s `date` is read in every form it takes: `2026-06-12 00:00:00` on the live API, `2026-06-12`
in the spec's examples, or an ISO date-time; anything else, or a time that is not midnight, is refused.

The day is asked as [00:00, next 00:00) with `granularity: day`, and only the day's own bucket is read:
a server that treats `time_range.end` as inclusive adds generations of the next day's first instant,
which land in the next day's bucket, so inclusive and exclusive servers give the same figures.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter import analytics_values
from usage_pipeline.openrouter.client import ACTIVITY_WINDOW_DAYS, ANALYTICS_MAX_ROWS, OpenRouterClient
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.generation import parse_created_at
from usage_pipeline.openrouter.model_names import ModelCatalogue, read_model_names
from usage_pipeline.openrouter.transport import OpenRouterError

ActivityModel = tuple[str, str | None]  # an /activity row's (model slug, model_permaslug)


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
    try:
        return analytics_values.count(value) or 0
    except ValueError as exc:
        raise OpenRouterError(f"a count {exc}") from None


def _float(value: object) -> float:
    """Money as sent (a JSON number); absent means zero."""
    try:
        return 0.0 if value is None else analytics_values.money(value)
    except ValueError as exc:
        raise OpenRouterError(f"an amount of USD {exc}") from None


def _bucket(row: dict[str, Any]) -> dt.datetime | None:
    try:
        return analytics_values.bucket_start(row, "day")
    except ValueError as exc:
        raise OpenRouterError(f"day request_count row: {exc}") from None


def activity_date(row: dict[str, Any]) -> dt.date:
    """The day of an /activity row: `2026-06-12 00:00:00` (live), `2026-06-12` (spec) or an ISO date-time
    at midnight UTC; OpenRouterError naming the value otherwise."""
    value = row.get("date")
    if not isinstance(value, str):
        raise OpenRouterError(f"GET /activity: row date must be a string, got {analytics_values.shown(value)}")
    try:
        moment = parse_created_at(value)
    except (ValueError, OverflowError):
        raise OpenRouterError(f"GET /activity: row date {value[:40]!r} is not a date") from None
    if (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
        raise OpenRouterError(f"GET /activity: row date {value[:40]!r} is not a UTC midnight")
    return moment.date()


def _activity_model(row: dict[str, Any]) -> ActivityModel:
    slug, permaslug = row.get("model"), row.get("model_permaslug")
    if not isinstance(slug, str) or not slug:
        raise OpenRouterError(f"GET /activity: row model must be a non-empty string, got "
                              f"{analytics_values.shown(slug)}")
    if permaslug is not None and not isinstance(permaslug, str):
        raise OpenRouterError(f"GET /activity: row model_permaslug must be a string, got "
                              f"{analytics_values.shown(permaslug)}")
    return slug, permaslug or None


def within_activity_window(day: dt.date, today: dt.date | None = None) -> bool:
    today = today or dt.datetime.now(dt.UTC).date()
    return today - dt.timedelta(days=ACTIVITY_WINDOW_DAYS) <= day < today


def _sum(rows: list[Usage]) -> Usage:
    return Usage(sum(r.requests for r in rows), sum(r.usage for r in rows),
                 sum(r.tokens_prompt for r in rows), sum(r.tokens_completion for r in rows))


def api_day_counts(client: OpenRouterClient, day: dt.date, today: dt.date | None = None) -> ApiDayCounts:
    start, end = day_bounds(day)
    result = client.analytics(
        metrics=["request_count", "total_usage", "tokens_prompt", "tokens_completion"],
        dimensions=["model"], granularity="day", start=start, end=end, limit=ANALYTICS_MAX_ROWS)
    if result.truncated:
        raise OpenRouterError(f"per-model analytics for {day} came back truncated")
    by_label: dict[str, list[Usage]] = {}
    for row in result.rows:
        bucket = _bucket(row)
        if bucket is None:
            raise OpenRouterError(f"day request_count row without a time bucket: {sorted(row)}")
        if bucket != start:
            continue  # the next day's first instant, from a server whose end bound is inclusive
        usage = Usage(_int(row.get("request_count")), _float(row.get("total_usage")),
                      _int(row.get("tokens_prompt")), _int(row.get("tokens_completion")))
        by_label.setdefault(str(row.get("model")), []).append(usage)
    labels = {label: _sum(rows) for label, rows in by_label.items()}
    activity: dict[ActivityModel, Usage] | None = None
    if within_activity_window(day, today):
        per_model: dict[ActivityModel, list[Usage]] = {}
        for row in client.activity(day):
            if not isinstance(row, dict):
                raise OpenRouterError(f"GET /activity: row is not a JSON object, got {analytics_values.shown(row)}")
            if activity_date(row) != day:
                continue
            per_model.setdefault(_activity_model(row), []).append(Usage(
                _int(row.get("requests")), _float(row.get("usage")),
                _int(row.get("prompt_tokens")), _int(row.get("completion_tokens"))))
        activity = {model: _sum(rows) for model, rows in per_model.items()}
    catalogue = ModelCatalogue(read_model_names(client), activity or {})
    return ApiDayCounts(day, _sum(list(labels.values())), labels, activity, catalogue)
