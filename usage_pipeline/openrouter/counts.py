"""OpenRouter's own counts for a day, the yardstick of the full-capture and cost checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from usage_pipeline.openrouter.capture import day_bounds
from usage_pipeline.openrouter.client import ACTIVITY_WINDOW_DAYS, ANALYTICS_MAX_ROWS, OpenRouterClient
from usage_pipeline.openrouter.transport import OpenRouterError


@dataclass(frozen=True)
class ModelUsage:
    requests: int
    usage: float
    tokens_prompt: int
    tokens_completion: int


@dataclass(frozen=True)
class ApiDayCounts:
    """Per-model counts from analytics, and from /activity when the day is inside its 30-day window."""

    day: dt.date
    analytics: dict[str, ModelUsage]
    activity_requests: dict[str, int] | None
    activity_usage: dict[str, float] | None

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.analytics.values())

    @property
    def usage(self) -> float:
        return sum(m.usage for m in self.analytics.values())


def _int(value: object) -> int:
    """Analytics returns counts as strings ("1523"); absent means zero."""
    return int(float(value)) if value not in (None, "") else 0


def within_activity_window(day: dt.date, today: dt.date | None = None) -> bool:
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return today - dt.timedelta(days=ACTIVITY_WINDOW_DAYS) <= day < today


def api_day_counts(client: OpenRouterClient, day: dt.date, today: dt.date | None = None) -> ApiDayCounts:
    start, end = day_bounds(day)
    result = client.analytics(
        metrics=["request_count", "total_usage", "tokens_prompt", "tokens_completion"],
        dimensions=["model"], start=start, end=end, limit=ANALYTICS_MAX_ROWS)
    if result.truncated:
        raise OpenRouterError(f"per-model analytics for {day} came back truncated")
    analytics = {
        str(row["model"]): ModelUsage(
            requests=_int(row.get("request_count")), usage=float(row.get("total_usage") or 0.0),
            tokens_prompt=_int(row.get("tokens_prompt")), tokens_completion=_int(row.get("tokens_completion")))
        for row in result.rows if _int(row.get("request_count"))
    }
    activity_requests: dict[str, int] | None = None
    activity_usage: dict[str, float] | None = None
    if within_activity_window(day, today):
        activity_requests, activity_usage = {}, {}
        for row in client.activity(day):
            if row.get("date") not in (None, day.isoformat()):
                continue
            model = str(row["model"])
            activity_requests[model] = activity_requests.get(model, 0) + _int(row.get("requests"))
            activity_usage[model] = activity_usage.get(model, 0.0) + float(row.get("usage") or 0.0)
    return ApiDayCounts(day, analytics, activity_requests, activity_usage)
