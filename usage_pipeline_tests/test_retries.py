"""The project's one retry policy (`usage_pipeline.retries`) over real HTTP on 127.0.0.1: every retry is
logged with what it waits for, and nothing secret (key, token, password, URL credentials, query string)
ever reaches the log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import OpenRouterSource
from usage_pipeline.retries import LoggedRetry, request_path, retry_policy
from usage_pipeline_tests.scripted_http import scripted_server

TOKEN = "tok-MARKEDTOKEN0b7e"
PASSWORD = "pw-MARKEDPASS9d1c"
API_KEY = "sk-or-v1-MARKEDKEY3a52"
SECRETS = (TOKEN, PASSWORD, API_KEY, "MARKED")


class _Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next scripted (status, headers), then 200 `{}`."""

    replies: list[tuple[int, dict[str, str]]] = []
    seen: list[str] = []  # request targets, query strings included

    def _answer(self) -> None:
        type(self).seen.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, headers = type(self).replies.pop(0) if type(self).replies else (200, {})
        body = b"{}"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815 (http.server API)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    with scripted_server(_Scripted) as (host, handler):
        yield f"{host}", handler


def session_with(retry: LoggedRetry) -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "usage_pipeline.retries"]


def assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert not [secret for secret in SECRETS if secret in logged]
    assert "?" not in logged and "db=" not in logged and "127.0.0.1" not in logged


def test_each_retry_is_logged_with_path_status_attempt_and_wait_and_no_secret(
    scripted: tuple[str, type[_Scripted]], caplog: pytest.LogCaptureFixture,
) -> None:
    host, handler = scripted
    handler.replies[:] = [(503, {}), (502, {})]
    retry = retry_policy(service="InfluxDB", statuses=(502, 503), methods=("POST",), total=5, backoff_factor=0.01)
    with session_with(retry) as session, caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"):
        session.headers["Authorization"] = f"Token {TOKEN}"
        response = session.post(f"http://ledger:{PASSWORD}@{host}/write?db=ledger&p={PASSWORD}&token={TOKEN}",
                                data=f"m secret=\"{TOKEN}\" 1", timeout=10)
    assert response.status_code == 200 and len(handler.seen) == 3
    assert retry_lines(caplog) == [  # backoff: none before the first retry, then factor * 2 ** (n - 1)
        "InfluxDB POST /write: HTTP 503; retry 1 in 0.00 s",
        "InfluxDB POST /write: HTTP 502; retry 2 in 0.02 s",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)
    assert_no_secret(caplog)


def test_a_connection_error_is_logged_by_its_type_until_the_budget_is_spent(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens
    retry = retry_policy(service="InfluxDB", statuses=(503,), methods=("GET",), total=2, backoff_factor=0.0)
    with session_with(retry) as session, caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"):
        with pytest.raises(requests.ConnectionError):
            session.get(f"http://ledger:{PASSWORD}@127.0.0.1:{port}/ping?u=ledger&p={PASSWORD}", timeout=5)
    assert retry_lines(caplog) == [
        "InfluxDB GET /ping: NewConnectionError; retry 1 in 0.00 s",
        "InfluxDB GET /ping: NewConnectionError; retry 2 in 0.00 s",
    ]
    assert_no_secret(caplog)


def test_retry_after_is_honoured_up_to_its_cap(
    scripted: tuple[str, type[_Scripted]], caplog: pytest.LogCaptureFixture,
) -> None:
    host, handler = scripted
    handler.replies[:] = [(503, {"Retry-After": "3600"}), (404, {})]
    retry = retry_policy(service="InfluxDB", statuses=(503,), methods=("GET",), total=5, backoff_factor=1.0,
                         retry_after_max=0.05)
    with session_with(retry) as session, caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"):
        response = session.get(f"http://{host}/query?q=1", timeout=10)
    assert response.status_code == 404  # not a retried status: handed back as it came
    assert retry_lines(caplog) == ["InfluxDB GET /query: HTTP 503; retry 1 in 0.05 s"]  # Retry-After, capped


def test_the_deadline_gives_up_on_a_server_that_keeps_failing(
    scripted: tuple[str, type[_Scripted]], caplog: pytest.LogCaptureFixture,
) -> None:
    host, handler = scripted
    handler.replies[:] = [(503, {})] * 10_000
    retry = retry_policy(service="OpenRouter", statuses=(503,), methods=("POST",), total=1_000, backoff_factor=0.01,
                         backoff_max=0.05, give_up_after_s=0.3)
    with session_with(retry) as session, caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"):
        response = session.post(f"http://{host}/analytics/query", json={}, timeout=10)
    assert response.status_code == 503  # the last failure, handed back for the caller's error
    assert 1 < len(handler.seen) < 1_000  # stopped by the deadline, not by the budget
    assert len(retry_lines(caplog)) == len(handler.seen) - 1


def test_openrouter_calls_send_params_and_log_each_retry_without_the_query_or_key(
    scripted: tuple[str, type[_Scripted]], caplog: pytest.LogCaptureFixture,
) -> None:
    host, handler = scripted
    handler.replies[:] = [(503, {"Retry-After": "0"})]

    async def call() -> dict[str, Any]:
        async with OpenRouterSource(OpenRouterSettings(api_key=API_KEY, base_url=f"http://{host}/api/v1")) as source:
            answer = await source.call("GET", "/activity", params={"date": "2025-03-10", "note": "a b&c"})
            assert source.retries == 1
            return answer

    with caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"):
        assert asyncio.run(call()) == {}
    assert handler.seen == ["/api/v1/activity?date=2025-03-10&note=a+b%26c"] * 2
    assert retry_lines(caplog) == ["OpenRouter GET /api/v1/activity: HTTP 503; retry 1 in 0.00 s"]
    assert_no_secret(caplog)


@pytest.mark.parametrize(("url", "path"), [
    ("/write?db=x&p=secret", "/write"),
    ("http://user:secret@influx:8086/query?q=1", "/query"),
    ("http://host", "/"),
    (None, "?"),
])
def test_request_path_keeps_only_the_path(url: str | None, path: str) -> None:
    assert request_path(url) == path
