"""Switchable misbehaviour of the emulated API: scripted fault rules, random 5xx, the per-key analytics limit.

A client is only trustworthy if it survives what OpenRouter really does under load, so every failure
the spec lists can be produced on demand, deterministically (seeded), and counted.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The account-wide limiters live in `limiters`; importable from here as before.
from openrouter_emulator.limiters import AccountLimiter as AccountLimiter
from openrouter_emulator.limiters import Refusal as Refusal

# The spec's example message for each error status it documents.
ERROR_MESSAGES: dict[int, str] = {
    400: "Invalid request parameters",
    401: "Missing Authentication header",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Only management keys can perform this operation",
    404: "Resource not found",
    408: "Operation timed out. Please try again later.",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "Service temporarily unavailable",
    524: "Request timed out. Please try again later.",
    529: "Provider returned error",
}
RANDOM_FAULT_STATUSES: tuple[int, ...] = (500, 502, 503, 524, 529)


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "code"}}`, the shape of every error response in the spec (in the live order)."""
    return {"error": {"message": message or ERROR_MESSAGES.get(status, "Error"), "code": status}}


def rate_limit_body(user_id: str | None, limit_headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A 429 as the live API writes it: `metadata` with the limiter's `X-RateLimit-*` values as strings (when a
    limiter with a budget refused) and `provider_name`, and the account's `user_id` beside `error`."""
    metadata: dict[str, Any] = {}
    if limit_headers is not None:
        metadata["headers"] = dict(limit_headers)
    metadata["provider_name"] = None
    body: dict[str, Any] = {"error": {"message": ERROR_MESSAGES[429], "code": 429, "metadata": metadata}}
    if user_id is not None:
        body["user_id"] = user_id
    return body


@dataclass(slots=True)
class Fault:
    """What to do to one request: wait `delay_ms`, then answer `status` (None: answer normally)."""

    status: int | None
    delay_ms: int = 0
    retry_after: int | None = None
    drawn: bool = False  # a random fault (`fault_rate`), not a scripted rule: the stats count them apart


@dataclass(slots=True)
class FaultRule:
    path: str  # "/generation", "/analytics/query", ... or "*"
    status: int | None
    remaining: int
    retry_after: int | None
    delay_ms: int
    generation_id: str | None = None  # only `GET /generation?id=` of this id (a record that stays missing)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FaultRule:
        status = raw.get("status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError(f"status must be an HTTP error status, got {status!r}")
        count = int(raw.get("count", 1))
        delay_ms = int(raw.get("delay_ms", 0))
        if count < 1 or delay_ms < 0 or (status is None and delay_ms == 0):
            raise ValueError("a rule needs count >= 1 and a status and/or a positive delay_ms")
        retry_after = raw.get("retry_after")
        path = str(raw.get("path", "*"))
        generation_id = raw.get("id")
        if generation_id is not None and (not isinstance(generation_id, str) or path != "/generation"):
            raise ValueError("id (a generation id, a string) needs path /generation")
        return cls(path, status, count, None if retry_after is None else int(retry_after), delay_ms, generation_id)

    def matches(self, path: str, generation_id: str | None) -> bool:
        return self.remaining > 0 and self.path in ("*", path) and self.generation_id in (None, generation_id)

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "count": self.remaining, "retry_after": self.retry_after,
                "delay_ms": self.delay_ms, **({"id": self.generation_id} if self.generation_id else {})}


class FaultPlan:
    """Scripted rules first (each consumes one of its `count` per matching request), then random faults:
    `fault_rate` of requests answer a status drawn from `fault_statuses` (by default the spec's 5xx)."""

    def __init__(self, *, seed: int, fault_rate: float,
                 fault_statuses: tuple[int, ...] = RANDOM_FAULT_STATUSES) -> None:
        self.fault_rate = fault_rate
        self.fault_statuses = fault_statuses
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def replace_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules = list(rules)

    def add_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules.extend(rules)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_json() for r in self._rules]

    def next_fault(self, path: str, generation_id: str | None = None) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(path, generation_id):
                    rule.remaining -= 1
                    self._rules = [r for r in self._rules if r.remaining > 0]
                    retry_after = rule.retry_after
                    if retry_after is None and rule.status == 429:
                        retry_after = 1
                    return Fault(rule.status, rule.delay_ms, retry_after)
            if self.fault_rate > 0 and self.fault_statuses and self._random.random() < self.fault_rate:
                status = self._random.choice(self.fault_statuses)
                return Fault(status, 0, 1 if status in (429, 503) else None, drawn=True)
        return None


class SlidingWindowLimiter:
    """At most `per_minute` accepted requests per key in any 60 s window; refused ones do not count."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._accepted: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str, now: float | None = None) -> int | None:
        """None when accepted, else the seconds to wait (the `Retry-After` value)."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._accepted.setdefault(key_id, deque())
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= self.per_minute:
                return max(1, math.ceil(times[0] + self.window_s - now))
            times.append(now)
            return None


# What a CDN in front of the API answers instead of the origin's JSON, per status (Cloudflare-like).
_CDN_TITLES: dict[int, tuple[str, str]] = {
    429: ("Error 1015", "You are being rate limited"),
    500: ("500 Internal Server Error", "Internal Server Error"),
    502: ("502 Bad Gateway", "Bad gateway"),
    503: ("503 Service Temporarily Unavailable", "Service Temporarily Unavailable"),
    504: ("504 Gateway Timeout", "Gateway time-out"),
    520: ("Error 520", "Web server is returning an unknown error"),
    521: ("Error 521", "Web server is down"),
    522: ("Error 522", "Connection timed out"),
    524: ("Error 524", "A timeout occurred"),
    529: ("529 Site is overloaded", "The origin is overloaded"),
}


def cdn_error_page(status: int, ray_id: str) -> bytes:
    """A Cloudflare-like HTML error page naming the status, as a CDN sends it in place of JSON."""
    title, detail = _CDN_TITLES.get(status, (f"Error {status}", "The origin returned an error"))
    return f"""<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<html lang="en-US">
<head>
<title>{title} | openrouter.ai | Cloudflare</title>
<meta charset="UTF-8" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta name="robots" content="noindex, nofollow" />
</head>
<body>
<div id="cf-wrapper">
  <div id="cf-error-details" class="cf-error-details-wrapper">
    <h1><span class="cf-error-type">{title}</span> <span class="cf-error-detail">{detail}</span></h1>
    <h2 class="cf-subheadline">{status} {detail}</h2>
    <p>The owner of this website (openrouter.ai) has a problem answering your request right now.
       Please try again in a few moments.</p>
    <div class="cf-error-footer">
      <span>Cloudflare Ray ID: <strong class="font-semibold">{ray_id}</strong></span>
      <span>Performance &amp; security by Cloudflare</span>
    </div>
  </div>
</div>
</body>
</html>
""".encode()
