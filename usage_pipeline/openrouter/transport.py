"""HTTP to OpenRouter's analytics and activity endpoints: one session, the project's retry policy, clear errors.

These calls are few (analytics is paced at 64/minute), so a synchronous `requests` session serves them;
record fetches, by the hundred in flight, go through `records.RecordFetcher` instead. Retried with
exponential backoff and jitter (`usage_pipeline.retries`, which logs each retry and gives up after
`give_up_after_s` of failures): 408, 429, 500, 502, 503, 504, 524, 529 and connection errors, honouring
`Retry-After` and OpenRouter's `X-RateLimit-Reset` (epoch ms). 401/402/403 are never retried.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.response import BaseHTTPResponse

from usage_pipeline.openrouter.adaptive_limit import MAX_PAUSE_S
from usage_pipeline.openrouter.records import body_kind, reset_seconds
from usage_pipeline.openrouter.settings import redact_url
from usage_pipeline.retries import retry_policy

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 524, 529})
CONNECT_TIMEOUT_S = 5.0


class OpenRouterError(RuntimeError):
    """Any failure talking to OpenRouter; the message names the endpoint and the server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OpenRouterAuthError(OpenRouterError):
    """401/402/403: the key is wrong, out of credit, or not a management key. Never retried."""


def _rate_limit_reset(response: BaseHTTPResponse) -> float | None:
    """The wait a 429 without `Retry-After` asks for through OpenRouter's `X-RateLimit-Reset` (epoch ms)."""
    if response.status != 429:
        return None
    return reset_seconds(response.headers.get("X-RateLimit-Reset"), time.time())


class Transport:
    """A pooled `requests.Session` with a thread-safe retry counter; never logs the key."""

    def __init__(self, base_url: str, api_key: str, *, pool_size: int = 4, timeout_s: float = 60.0,
                 retries: int = 8, give_up_after_s: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.headers["User-Agent"] = "usage_pipeline"
        retry = retry_policy(
            service="OpenRouter", statuses=TRANSIENT_STATUSES, methods=("GET", "POST"),  # analytics queries are reads
            total=retries, backoff_factor=0.5, backoff_jitter=0.5, backoff_max=8.0, retry_after_max=MAX_PAUSE_S,
            give_up_after_s=give_up_after_s, retry_after_fallback=_rate_limit_reset)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self.retries = 0

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; return the JSON body, else raise OpenRouterError."""
        started = time.monotonic()
        try:
            response = self.session.request(method, f"{self.base_url}{path}", params=params, json=json,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            # The exception can hold the request (its headers carry the key): only its kind is kept.
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            raise OpenRouterError(
                f"{method} {path}: no answer from OpenRouter at {redact_url(self.base_url)} "
                f"(tried for {time.monotonic() - started:.1f} s with retries; last: "
                f"{type(reason or exc).__name__})") from None
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        with self._lock:
            self.retries += len(history)
        if response.status_code >= 400:
            raise _error_for(method, path, response)
        try:
            payload = response.json()
        except ValueError as exc:
            raise OpenRouterError(f"{method} {path}: answer is not JSON (status {response.status_code}, "
                                  f"{_body_kind(response)})") from exc
        if not isinstance(payload, dict):
            raise OpenRouterError(f"{method} {path}: answer is not a JSON object")
        return payload

    def close(self) -> None:
        self.session.close()


def _body_kind(response: requests.Response) -> str:
    return body_kind(response.content, response.headers.get("Content-Type", ""))


def _error_for(method: str, path: str, response: requests.Response) -> OpenRouterError:
    status = response.status_code
    try:
        message = str(response.json().get("error", {}).get("message", ""))
    except (ValueError, AttributeError):
        message = _body_kind(response)
    where = f"{method} {path}"
    if status == 401:
        return OpenRouterAuthError(f"{where}: 401 {message!r}: OpenRouter did not accept the key; "
                                   "set OPENROUTER_API_KEY to a valid management key", status)
    if status == 402:
        return OpenRouterAuthError(f"{where}: 402 {message!r}: the account behind the key is out of credit", status)
    if status == 403:
        return OpenRouterAuthError(f"{where}: 403 {message!r}: this endpoint needs a management key "
                                   "(OPENROUTER_API_KEY holds an inference key or one without access)", status)
    if status in TRANSIENT_STATUSES:
        return OpenRouterError(f"{where}: still {status} {message!r} after retries with backoff", status)
    return OpenRouterError(f"{where}: {status} {message!r}", status)
