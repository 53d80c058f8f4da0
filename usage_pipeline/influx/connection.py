"""One InfluxDB server through its 1.x-compatible HTTP API: a pooled session, retries, and error texts with
every credential redacted. Writes are upserts and queries are reads, so every request is safe to retry on
connection errors and 5xx; a 4xx means the data or the setup is wrong and must fail the caller loudly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from usage_pipeline.influx.errors import InfluxError, InfluxQueryError
from usage_pipeline.influx.server import InfluxServer
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.retries import retry_policy

RETRY_STATUSES = (500, 502, 503, 504)


def auth_headers(settings: InfluxSettings) -> dict[str, str]:
    """A token (2.x/3.x) or 1.x credentials, by header: never in a URL, a log line or an exception."""
    if settings.token:
        return {"Authorization": f"Token {settings.token}"}
    if settings.username is not None:
        basic = base64.b64encode(f"{settings.username}:{settings.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def make_session(settings: InfluxSettings) -> requests.Session:
    """A session that retries transient failures and authenticates by header, never by URL."""
    retry = retry_policy(service="InfluxDB", statuses=RETRY_STATUSES, methods=("GET", "POST"),  # upserts, reads
                         total=5, read=3, backoff_factor=0.5)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(auth_headers(settings))
    return session


def error_text(body: str, header_error: str | None = None, reason: str = "") -> str:
    """The error an InfluxDB answer carries, whichever major version sent it."""
    try:
        payload = json.loads(body)
        if isinstance(payload, dict):  # 1.x and 3.x say {"error": ...}; 2.x says {"code": ..., "message": ...}
            if payload.get("error"):
                return str(payload["error"])
            if payload.get("message"):
                return f"{payload.get('code', 'error')}: {payload['message']}"
    except ValueError:
        pass
    return header_error or body[:500] or reason


def server_text(response: requests.Response) -> str:
    return error_text(response.text, response.headers.get("X-Influxdb-Error"), response.reason or "")


def result_errors(payload: Any) -> list[str]:
    """The errors of a /query answer: the request's own and each statement's (a 200 can carry them)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("results", []), list):
        return [f"unexpected response: {str(payload)[:200]}"]
    errors = [str(payload["error"])] if payload.get("error") else []
    errors += [str(result["error"]) for result in payload.get("results") or [] if result.get("error")]
    return errors


def chunk_series(line: bytes, settings: InfluxSettings) -> list[dict[str, Any]]:
    """The series of one chunk of a chunked /query answer, which sends a JSON document per chunk and line."""
    payload = json.loads(line)
    errors = result_errors(payload)
    if errors:
        raise InfluxQueryError(settings.redact(f"chunked query failed: {'; '.join(errors)}"))
    return [series for result in payload.get("results") or [] for series in result.get("series") or []]


class InfluxConnection:
    """The server and database of `settings`, over one pooled session."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.session = make_session(settings)

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

    def server(self) -> InfluxServer:
        """The server's version and build from `/ping`, proving it is up and speaks the v1 API."""
        try:
            response = self.session.get(f"{self.url}/ping", timeout=self.settings.timeout_s)
        except requests.RequestException as exc:
            raise InfluxError(self.settings.redact(f"InfluxDB at {self.url} is unreachable: {exc}")) from None
        if not response.ok:
            raise InfluxError(self.settings.redact(f"ping {self.url}: HTTP {response.status_code} "
                                                   f"{server_text(response)}"))
        return InfluxServer.from_headers(response.headers)

    def ping(self) -> str:
        """The server version (X-Influxdb-Version)."""
        return self.server().version

    def post_query(self, influxql: str, params: Mapping[str, str], stream: bool = False) -> requests.Response:
        """POST one InfluxQL statement (answers in ns epochs); raise InfluxQueryError unless 2xx."""
        try:
            response = self.session.post(  # the statement in the body: no URL length limit, none in access logs
                f"{self.url}/query", params={"db": self.settings.database, "epoch": "ns", **params},
                data={"q": influxql}, timeout=self.settings.timeout_s, stream=stream)
        except requests.RequestException as exc:
            raise InfluxQueryError(self.settings.redact(f"query to {self.url} got no response: {exc}")) from None
        if not response.ok:
            text = self.settings.redact(server_text(response))
            response.close()
            raise InfluxQueryError(f"query failed: HTTP {response.status_code}: {text} (query: {influxql[:300]})")
        return response

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the first statement's series (empty when it has none)."""
        response = self.post_query(influxql, {})
        try:
            payload = response.json()
        except ValueError as exc:
            text = self.settings.redact(response.text[:200])
            raise InfluxQueryError(f"query returned non-JSON: {text!r} (query: {influxql[:300]})") from exc
        errors = result_errors(payload)
        if errors:
            raise InfluxQueryError(self.settings.redact(f"query failed: {'; '.join(errors)} (query: {influxql[:300]})"))
        results = payload.get("results") or []
        return list(results[0].get("series") or []) if results else []
