"""One `GET /generation?id=` answer, read as what it says about the record (`RecordRetries` decides what next)
and about the account (`pace.Pace` does): only a 429 saying the budget is spent speaks for every request."""

from __future__ import annotations

import email.utils
import enum
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter.errors import TRANSIENT_STATUSES

MAX_WAIT_S = 60.0  # no Retry-After or reset further away than this is waited for in one go


class Kind(enum.Enum):
    RECORD = "record"
    NOT_FOUND = "not_found"  # records lag for seconds after their request finishes
    THROTTLED = "throttled"  # 429
    TRANSIENT = "transient"  # 5xx, an HTML error page, a timeout, a broken connection
    AUTH = "auth"  # 401/402/403: nothing will work; stop the day
    REFUSED = "refused"  # another 4xx about this request: retrying cannot help


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    data: dict[str, Any] | None = None
    status: int | None = None
    reason: str = ""
    retry_after_s: float | None = None  # Retry-After, for this record's next attempt
    reset_after_s: float | None = None  # a 429's X-RateLimit-Reset, as seconds from now
    exhausted: bool = False  # a 429 saying the account's budget is spent: every request waits


def retry_after_seconds(value: str | None, now_wall: float) -> float | None:
    """`Retry-After` as seconds from now: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value.strip()).timestamp() - now_wall
        except (TypeError, ValueError):
            return None
    return min(max(0.0, seconds), MAX_WAIT_S) if math.isfinite(seconds) else None


def reset_seconds(value: str | None, now_wall: float) -> float | None:
    """`X-RateLimit-Reset` (epoch ms as OpenRouter sends it, or epoch seconds) as seconds from now, if readable."""
    try:
        stamp = float((value or "").strip())
    except ValueError:
        return None
    if not math.isfinite(stamp) or stamp <= 0:
        return None
    stamp = stamp if stamp < 1e11 else stamp / 1000
    return min(max(0.0, stamp - now_wall), MAX_WAIT_S)


def error_message(body: bytes, content_type: str) -> str:
    """OpenRouter's error message, quoted, or what the body is when it is not OpenRouter's JSON."""
    try:
        return repr(str(json.loads(body).get("error", {}).get("message", ""))[:200])
    except (ValueError, AttributeError):
        if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
            return "an HTML error page (a CDN's, not OpenRouter's JSON)"
        return "a body that is not JSON"


def read_answer(status: int, headers: Mapping[str, str], body: bytes, now_wall: float) -> Answer:
    """Classify one answer; `now_wall` (epoch seconds) turns the headers' times into waits."""
    content_type = headers.get("Content-Type", "")
    if status == 200:
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            data = None
        if isinstance(data, dict):
            return Answer(Kind.RECORD, data=data, status=200)
        return Answer(Kind.TRANSIENT, status=200, reason=f"200 with {error_message(body, content_type)}")
    message = error_message(body, content_type)
    retry_after = retry_after_seconds(headers.get("Retry-After"), now_wall)
    if status == 404:
        return Answer(Kind.NOT_FOUND, status=404, reason="still 404 after retries")
    if status == 429:
        reset = reset_seconds(headers.get("X-RateLimit-Reset"), now_wall)
        exhausted = reset is not None or headers.get("X-RateLimit-Remaining", "").strip() == "0"
        return Answer(Kind.THROTTLED, status=429, reason=f"429 {message}", retry_after_s=retry_after,
                      reset_after_s=reset, exhausted=exhausted)
    if status in (401, 402, 403):
        return Answer(Kind.AUTH, status=status, reason=f"{status} {message}")
    if status in TRANSIENT_STATUSES or status >= 500:
        return Answer(Kind.TRANSIENT, status=status, reason=f"{status} {message}", retry_after_s=retry_after)
    return Answer(Kind.REFUSED, status=status, reason=f"{status} {message}")


@dataclass(frozen=True)
class RecordRetries:
    """Each record's budgets and waits. A completed day's records are hours old, so a first 404 is likely a glitch
    (rechecked at once, then after 1 s doubling: records lag their request 0.5-30 s). A 429 is the server pacing
    us, not the record's fault: a much larger budget, and one speaking for the account waits at the shared pause."""

    not_found: int = 6
    transient: int = 8
    throttled: int = 200
    first_not_found_s: float = 0.0
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, answer: Answer, attempts: int, rng: random.Random) -> float | None:
        """Seconds before the next attempt, after `attempts` answers of this kind (None: the budget is spent)."""
        kind = answer.kind
        if kind is Kind.NOT_FOUND and attempts < self.not_found:
            return self.first_not_found_s if attempts == 0 else min(self.cap_s, self.base_s * 2**attempts)
        if kind is Kind.TRANSIENT and attempts < self.transient:
            backoff = min(self.cap_s, self.base_s * 2**attempts) * rng.uniform(0.5, 1.0)
            return max(backoff, answer.retry_after_s or 0.0)
        if kind is Kind.THROTTLED and attempts < self.throttled:
            if answer.exhausted:
                return 0.0
            if answer.retry_after_s is not None:
                return answer.retry_after_s
            return min(self.cap_s, 0.25 * 2 ** min(attempts, 16)) * rng.uniform(0.5, 1.0)
        return None
