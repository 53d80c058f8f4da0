"""OpenRouter's analytics and activity endpoints, as typed calls. No Dagster in here.

Record fetches (`GET /generation`, by the hundred in flight) are `records.RecordFetcher`'s; this client
carries the settings they use.

`POST /analytics/query` is paced client-side to its documented 64 requests/minute so a day's
enumeration does not spend its time in 429 back-offs; the server's 429 + Retry-After stays the
authority (handled by the transport's retries).
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.transport import OpenRouterError, Transport

ANALYTICS_MAX_ROWS = 10_000
ANALYTICS_RPM = 64
ACTIVITY_WINDOW_DAYS = 30


def iso_ms(moment: dt.datetime) -> str:
    """The time_range form the analytics endpoint takes: UTC, millisecond precision, `Z`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AnalyticsResult:
    rows: list[dict[str, Any]]
    truncated: bool
    row_count: int


@dataclass
class PerMinuteLimiter:
    """Allow at most `per_minute` calls in any 60 s; callers block until a slot frees up."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _stamps: collections.deque[float] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                while self._stamps and now - self._stamps[0] >= 60.0:
                    self._stamps.popleft()
                if len(self._stamps) < self.per_minute:
                    self._stamps.append(now)
                    return
                wait = 60.0 - (now - self._stamps[0])
            self.sleep(max(wait, 0.01))


class OpenRouterClient:
    """One API resource for the whole project: the live OpenRouter, or the emulator at another URL."""

    def __init__(self, settings: OpenRouterSettings, *, analytics_rpm: int = ANALYTICS_RPM,
                 not_found_retries: int = 6) -> None:
        self.settings = settings
        self.not_found_retries = not_found_retries  # per record; records.RecordRetries applies it
        self.transport = Transport(settings.base_url, settings.api_key, timeout_s=settings.timeout_s,
                                   give_up_after_s=settings.give_up_after_s)
        self._limiter = PerMinuteLimiter(analytics_rpm)
        self.analytics_queries = 0

    @property
    def retries(self) -> int:
        return self.transport.retries

    def analytics(self, *, metrics: Sequence[str], start: dt.datetime, end: dt.datetime,
                  dimensions: Sequence[str] = (), granularity: str | None = None,
                  limit: int = ANALYTICS_MAX_ROWS, filters: Sequence[dict[str, Any]] = ()) -> AnalyticsResult:
        body: dict[str, Any] = {
            "metrics": list(metrics),
            "time_range": {"start": iso_ms(start), "end": iso_ms(end)},
            "limit": limit,
        }
        if dimensions:
            body["dimensions"] = list(dimensions)
        if granularity:
            body["granularity"] = granularity
        if filters:
            body["filters"] = list(filters)
        self._limiter.acquire()
        self.analytics_queries += 1
        payload = self.transport.request("POST", "/analytics/query", json=body)
        try:
            inner = payload["data"]
            meta = inner["metadata"]
            rows = list(inner["data"])
            return AnalyticsResult(rows=rows, truncated=bool(meta["truncated"]),
                                   row_count=int(meta.get("row_count", len(rows))))
        except (KeyError, TypeError) as exc:
            raise OpenRouterError(f"POST /analytics/query: unexpected answer shape (missing {exc})") from exc

    def models(self) -> list[dict[str, Any]]:
        """`GET /models`, the whole list (no offset or limit): the only place a model's slug, permaslug and
        analytics label meet. Paced with the analytics queries, since it is read beside them."""
        self._limiter.acquire()
        payload = self.transport.request("GET", "/models")
        rows = payload.get("data")
        if not isinstance(rows, list):
            raise OpenRouterError("GET /models: answer has no 'data' list")
        return rows

    def activity(self, day: dt.date) -> list[dict[str, Any]]:
        payload = self.transport.request("GET", "/activity", params={"date": day.isoformat()})
        rows = payload.get("data")
        if not isinstance(rows, list):
            raise OpenRouterError("GET /activity: answer has no 'data' list")
        return rows

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> OpenRouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
