"""`GET /generation?id=`, one attempt at a time, over one pooled aiohttp session.

Records are fetched by the hundred in flight, so this path is async: measured on 2 cores against a local
server, aiohttp spends ~100 µs of client CPU per request, urllib3 with 64 threads ~460 µs, `requests`
~800-950 µs and httpx (async) ~1,850 µs. Each attempt is classified into an `Answer`; what to do next
(retry when, give up when) is `RecordRetries`' decision, and pacing is `AdaptiveLimit`'s.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from usage_pipeline.openrouter.adaptive_limit import MAX_PAUSE_S, Signal

TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504, 524, 529})


class Kind(enum.Enum):
    RECORD = "record"
    NOT_FOUND = "not_found"  # records lag for seconds after their request finishes
    THROTTLED = "throttled"  # 429: has its own, much larger retry budget
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
    reset_at: float | None = None  # a 429's X-RateLimit-Reset, as a monotonic time
    reset_stamp: float | None = None  # the same as the server stamped it: epoch seconds, exact
    retry_at: float | None = None  # a 429's Retry-After, as a monotonic time
    budget: int | None = None  # a 429's X-RateLimit-Limit: requests per window
    exhausted: bool = False  # a 429 saying the account's budget is spent (X-RateLimit-Remaining: 0 or -Reset)

    @property
    def signal(self) -> Signal:
        if self.kind is Kind.THROTTLED:
            return Signal.EXHAUSTED if self.exhausted else Signal.THROTTLED
        return Signal.FAILED if self.kind is Kind.TRANSIENT else Signal.CLEAN


def retry_after_seconds(value: str | None, now_wall: float) -> float | None:
    """`Retry-After` as seconds from now: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - now_wall
    return max(0.0, seconds) if math.isfinite(seconds) else None


def reset_stamp(value: str | None) -> float | None:
    """`X-RateLimit-Reset` (epoch milliseconds, as OpenRouter sends it) as epoch seconds; None if unreadable."""
    if not value:
        return None
    try:
        stamp = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(stamp) or stamp <= 0:
        return None
    return stamp if stamp < 1e11 else stamp / 1000  # epoch seconds: tolerated, though OpenRouter sends ms


def reset_seconds(value: str | None, now_wall: float) -> float | None:
    """`X-RateLimit-Reset` as seconds from now."""
    stamp = reset_stamp(value)
    return None if stamp is None else max(0.0, stamp - now_wall)


def rate_budget(value: str | None) -> int | None:
    """`X-RateLimit-Limit`: the requests a window allows; None when absent or not a positive integer."""
    count = rate_count(value)
    return count if count else None


def rate_count(value: str | None) -> int | None:
    """A whole-number rate-limit header (`X-RateLimit-Remaining` may be 0); None when absent or unreadable."""
    try:
        count = int((value or "").strip())
    except ValueError:
        return None
    return count if count >= 0 else None


def budget_spent(headers: Mapping[str, str], reset_at: float | None) -> bool:
    """Whether a 429 speaks for the whole account: `X-RateLimit-Remaining: 0`, or a reset time named. A 429
    with neither refused only its own request (a lone 429), whatever its Retry-After says."""
    return reset_at is not None or rate_count(headers.get("X-RateLimit-Remaining")) == 0


def throttle_hints(headers: Mapping[str, str], now: float, now_wall: float) -> tuple[float | None, float | None]:
    """(reset_at, retry_at): when a 429's X-RateLimit-Reset and Retry-After say requests may resume, as
    monotonic times; None for a header that is absent or unreadable."""
    reset = reset_seconds(headers.get("X-RateLimit-Reset"), now_wall)
    retry = retry_after_seconds(headers.get("Retry-After"), now_wall)
    return (None if reset is None else now + min(reset, MAX_PAUSE_S),
            None if retry is None else now + min(retry, MAX_PAUSE_S))


def body_kind(body: bytes, content_type: str) -> str:
    """What an answer that is not OpenRouter's JSON is, for an error message (both HTTP stacks use it)."""
    if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
        return "an HTML error page (a CDN's, not OpenRouter's JSON)"
    return "a body that is not JSON"


def _error_message(body: bytes, content_type: str) -> str:
    try:
        message = json.loads(body).get("error", {}).get("message", "")
        return repr(str(message)[:200])
    except (ValueError, AttributeError):
        return body_kind(body, content_type)


class RecordFetcher:
    """One attempt per call; the session is opened and closed with `async with`."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float, connections: int) -> None:
        self._url = f"{base_url.rstrip('/')}/generation"
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "usage_pipeline"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 5.0))
        self._connections = connections
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RecordFetcher:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, generation_id: str) -> Answer:
        assert self._session is not None, "use RecordFetcher in `async with`"
        try:
            async with self._session.get(self._url, params={"id": generation_id}) as response:
                body = await response.read()
                status, headers = response.status, response.headers
                content_type = response.headers.get("Content-Type", "")
        except TimeoutError:
            return Answer(Kind.TRANSIENT, reason=f"no answer within {self.timeout_s:g}s")
        except aiohttp.ClientError as exc:  # the message could name the URL; the type is enough
            return Answer(Kind.TRANSIENT, reason=f"connection failed ({type(exc).__name__})")
        if status == 200:
            try:
                data = json.loads(body)["data"]
            except (ValueError, KeyError, TypeError):
                data = None
            if isinstance(data, dict):
                return Answer(Kind.RECORD, data=data, status=200)
            return Answer(Kind.TRANSIENT, status=200, reason=f"200 with {_error_message(body, content_type)}")
        message = _error_message(body, content_type)
        if status == 404:
            return Answer(Kind.NOT_FOUND, status=404, reason="still 404 after retries")
        if status == 429:
            reset_at, retry_at = throttle_hints(headers, time.monotonic(), time.time())
            return Answer(Kind.THROTTLED, status=429, reason=f"429 {message}", reset_at=reset_at, retry_at=retry_at,
                          reset_stamp=reset_stamp(headers.get("X-RateLimit-Reset")),
                          retry_after_s=retry_after_seconds(headers.get("Retry-After"), time.time()),
                          budget=rate_budget(headers.get("X-RateLimit-Limit")),
                          exhausted=budget_spent(headers, reset_at))
        if status in (401, 402, 403):
            return Answer(Kind.AUTH, status=status, reason=f"{status} {message}")
        retry_after = retry_after_seconds(headers.get("Retry-After"), time.time())
        if status in TRANSIENT_STATUSES or status >= 500:
            return Answer(Kind.TRANSIENT, status=status, reason=f"{status} {message}", retry_after_s=retry_after)
        return Answer(Kind.REFUSED, status=status, reason=f"{status} {message}")


@dataclass(frozen=True)
class RecordRetries:
    """Each record's budgets. 404s wait out the record's publication lag (0.25+1+2+...+16 s = 31.25 s):
    the first recheck is quick, since a completed day's records are hours old and a first 404 is more
    likely a glitch than the lag, and quicker still in the day's tail, where every 404 is on the critical
    path and the budget is idle;
    transient failures back off exponentially with jitter, at least as long as a Retry-After says. 429s
    have their own, much larger budget: they are the server pacing us, not a fault of the record. A lone
    429 (no rate-limit header) waits its own Retry-After, else a short backoff; one that says the account's
    budget is spent waits at the shared pause instead (`AdaptiveLimit`)."""

    not_found: int = 6
    transient: int = 8
    throttled: int = 200
    base_s: float = 0.5
    cap_s: float = 30.0
    throttled_base_s: float = 0.25
    first_not_found_s: float = 0.25
    tail_first_not_found_s: float = 0.05  # in the day's tail the budget is idle: a recheck costs nothing

    def not_found_delay(self, attempt: int, *, tail: bool = False) -> float:
        if attempt == 0:
            return self.tail_first_not_found_s if tail else self.first_not_found_s
        return min(self.cap_s, self.base_s * 2 ** attempt)

    def transient_delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        backoff = min(self.cap_s, self.base_s * 2 ** attempt) * rng.uniform(0.5, 1.0)
        return max(backoff, min(retry_after_s or 0.0, MAX_PAUSE_S))

    def throttled_delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """A lone 429's own wait: its Retry-After (capped), else a jittered backoff from 0.25 s."""
        if retry_after_s is not None:
            return min(retry_after_s, MAX_PAUSE_S)
        return min(self.cap_s, self.throttled_base_s * 2 ** min(attempt, 16)) * rng.uniform(0.5, 1.0)
