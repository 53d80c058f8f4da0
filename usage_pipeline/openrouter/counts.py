"""OpenRouter's own counts for a day, the yardstick of the full-capture and cost checks.

Two sources, never joined by name. Analytics gives the day's exact total; its `model` dimension comes
back as human-readable labels ("OpenAI: GPT-4.1"), not the slug `GET /generation` records
(`openai/gpt-4.1`), so per-label figures are shown but never matched to stored models. `/activity` names
models by slug (and permaslug), so per-model comparisons use it, within its 30-day window.

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
from usage_pipeline.openrouter.transport import OpenRouterError


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
    activity: dict[str, Usage] | None  # /activity per model slug, when the day is inside its window

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
    activity: dict[str, Usage] | None = None
    if within_activity_window(day, today):
        per_model: dict[str, list[Usage]] = {}
        for row in client.activity(day):
            if row.get("date") not in (None, day.isoformat()):
                continue
            per_model.setdefault(str(row["model"]), []).append(Usage(
                _int(row.get("requests")), _float(row.get("usage")),
                _int(row.get("prompt_tokens")), _int(row.get("completion_tokens"))))
        activity = {model: _sum(rows) for model, rows in per_model.items()}
    return ApiDayCounts(day, _sum(list(labels.values())), labels, activity)
