"""The one OpenRouter client: one aiohttp session owning the key, the retries and the pace. Calls are retried
by tenacity until `give_up_after_s` of failures, analytics paced at the documented 64 requests/minute; a
record's `generation()` is one attempt, paced and retried by `pace` and `fetch`. `OpenRouterClient` is the same
client on a private event loop, for the plain callers (the checks, the history)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Coroutine
from contextlib import AbstractContextManager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, stop_after_delay

from usage_pipeline.http_session import OwnsSession
from usage_pipeline.openrouter.analytics_values import AnalyticsResult, analytics_body, read_analytics
from usage_pipeline.openrouter.errors import TRANSIENT_STATUSES, OpenRouterError, http_error
from usage_pipeline.openrouter.pace import Pace
from usage_pipeline.openrouter.records import Answer, Kind, error_message, read_answer
from usage_pipeline.openrouter.settings import OpenRouterSettings, redact_url

log = logging.getLogger("usage_pipeline.retries")
ANALYTICS_RPM = 64
ATTEMPTS = 9  # a call: the first and 8 retries, within give_up_after_s
T = TypeVar("T")


class _Transient(Exception):
    """An answer worth retrying; `wait_s` is what the server asked for (None: back off)."""

    def __init__(self, cause: str, wait_s: float | None, error: OpenRouterError) -> None:
        super().__init__(cause)
        self.cause, self.wait_s, self.error = cause, wait_s, error


class OpenRouterSource(OwnsSession):
    """`async with OpenRouterSource(settings) as source:`; on one event loop."""

    def __init__(self, settings: OpenRouterSettings, *, analytics_rpm: int = ANALYTICS_RPM) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.pace = Pace(settings.max_concurrency, settings.max_rps, settings.record_timeout_s)
        self.analytics_queries = 0
        self.retries = 0  # of calls (a record's retries are `fetch`'s)
        self._analytics_pace = AsyncLimiter(analytics_rpm, 60)

    def open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.max_concurrency + 4),
            headers={"Authorization": f"Bearer {self.settings.api_key}", "User-Agent": "usage_pipeline"})

    async def generation(self, generation_id: str, timeout_s: float) -> Answer:
        """One attempt at `GET /generation?id=`, classified; never raises for what the server answers."""
        try:
            async with self.session.get(f"{self.base_url}/generation", params={"id": generation_id},
                                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                return read_answer(response.status, response.headers, await response.read(), time.time())
        except TimeoutError:
            return Answer(Kind.TRANSIENT, reason=f"no answer within {timeout_s:.2g} s")
        except aiohttp.ClientError as exc:  # its message could name the URL; the type is enough
            return Answer(Kind.TRANSIENT, reason=f"connection failed ({type(exc).__name__})")

    async def analytics(self, **query: Any) -> AnalyticsResult:
        """`POST /analytics/query`, paced and retried; `query` is `analytics_values.analytics_body`'s arguments."""
        async with self._analytics_pace:
            self.analytics_queries += 1
            return read_analytics(await self.call("POST", "/analytics/query", json_body=analytics_body(**query)))

    async def data_list(self, path: str, params: dict[str, str] | None = None) -> list[Any]:
        rows = (await self.call("GET", path, params=params)).get("data")
        if not isinstance(rows, list):
            raise OpenRouterError(f"GET {path}: answer has no 'data' list")
        return rows

    async def call(self, method: str, path: str, *, json_body: dict[str, Any] | None = None,
                   params: dict[str, str] | None = None) -> dict[str, Any]:
        """One request, retried; its JSON object, else OpenRouterError saying what was tried."""
        started = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient), wait=self._wait, reraise=True,
            before_sleep=lambda state: self._log_retry(state, f"{method} {urlsplit(self.base_url).path}{path}"),
            stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(self.settings.give_up_after_s))
        try:
            return await retrying(self._once, method, path, json_body, params)
        except _Transient as last:
            if last.error.status is None:
                raise OpenRouterError(
                    f"{method} {path}: no answer from OpenRouter at {redact_url(self.base_url)} (tried for "
                    f"{time.monotonic() - started:.1f} s with retries; last: {last.cause})") from None
            raise last.error from None

    async def _once(self, method: str, path: str, json_body: dict[str, Any] | None,
                    params: dict[str, str] | None) -> dict[str, Any]:
        where = f"{method} {path}"
        try:
            async with self.session.request(method, f"{self.base_url}{path}", json=json_body, params=params,
                                            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s)) as response:
                content, status, headers = await response.read(), response.status, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _Transient(type(exc).__name__, None, OpenRouterError(f"{where}: no answer")) from None
        if status >= 400:
            error = http_error(where, status, error_message(content, headers.get("Content-Type", "")))
            if status not in TRANSIENT_STATUSES:
                raise error
            answer = read_answer(status, headers, content, time.time())  # its Retry-After, else a 429's reset
            wait = answer.retry_after_s if answer.retry_after_s is not None else answer.reset_after_s
            raise _Transient(f"HTTP {status}", wait, error)
        try:
            payload = json.loads(content)
        except ValueError:
            raise OpenRouterError(f"{where}: answer is not JSON (status {status})") from None
        if not isinstance(payload, dict):
            raise OpenRouterError(f"{where}: answer is not a JSON object")
        return payload

    def _log_retry(self, state: RetryCallState, where: str) -> None:
        """A warning per retry: method, path, cause, attempt and wait; never a header, a body or the query."""
        self.retries += 1
        failed = state.outcome.exception() if state.outcome else None
        cause = failed.cause if isinstance(failed, _Transient) else "error"
        wait = (state.next_action.sleep if state.next_action else 0.0) or 0.0
        log.warning("OpenRouter %s: %s; retry %d in %.2f s", where, cause, state.attempt_number, wait)

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After (or X-RateLimit-Reset), else a jittered backoff; never past the deadline."""
        failed = state.outcome.exception() if state.outcome else None
        if isinstance(failed, _Transient) and failed.wait_s is not None:
            wait = failed.wait_s
        else:
            wait = min(8.0, 0.5 * 2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)
        return max(0.0, min(wait, self.settings.give_up_after_s - (state.seconds_since_start or 0.0)))


class OpenRouterClient(AbstractContextManager["OpenRouterClient"]):
    """The plain, synchronous client, one call at a time: `with OpenRouterClient(settings) as client:`."""

    def __init__(self, settings: OpenRouterSettings, *, analytics_rpm: int = ANALYTICS_RPM) -> None:
        self._loop = asyncio.new_event_loop()
        self._source = OpenRouterSource(settings, analytics_rpm=analytics_rpm)
        self._run(self._source.__aenter__())

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(call)

    def analytics(self, **query: Any) -> AnalyticsResult:
        return self._run(self._source.analytics(**query))

    def call(self, method: str, path: str, *, json_body: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> dict[str, Any]:
        """One request, retried as `OpenRouterSource.call`: its JSON object, else OpenRouterError."""
        return self._run(self._source.call(method, path, json_body=json_body, params=params))

    def models(self) -> list[Any]:
        """`GET /models`, the whole list: the only place a model's slug, permaslug and analytics label meet."""
        return self._run(self._source.data_list("/models"))

    def activity(self, day: dt.date) -> list[Any]:
        return self._run(self._source.data_list("/activity", {"date": day.isoformat()}))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._source.__aexit__(None, None, None))
            self._loop.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
