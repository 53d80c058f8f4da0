"""The request, response and error shapes every part of the emulator speaks.

The endpoint modules raise `ApiError` and read query parameters, the server routes `Request`s and
answers `Response`s; keeping these here lets both sides share them without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openrouter_emulator.faults import error_body


class ApiError(Exception):
    """An error answer in the spec's shape; `retry_after` becomes the `Retry-After` header."""

    def __init__(self, status: int, message: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def query_param(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # below /api/v1 or /_emulator
    params: dict[str, list[str]]
    body: bytes
    key: str | None = None
    management: bool = False

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (ValueError, RecursionError):  # not UTF-8 or JSON, a 5,000-digit number, nested too deeply
            raise ApiError(400, "Request body is not valid JSON") from None


# An endpoint: the request and the unix time it is answered at, in; the JSON payload (or ApiError) out.
Handler = Callable[[Request, float], Any]


@dataclass(slots=True)
class Response:
    """A JSON answer (`payload`), or, when `raw` is set, those bytes as `content_type` (a CDN's HTML page)."""

    status: int
    payload: Any
    headers: dict[str, str]
    raw: bytes | None = None
    content_type: str = "application/json"


def error_response(error: ApiError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return Response(error.status, error_body(error.status, error.message), headers)
