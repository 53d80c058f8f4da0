"""What a Broadcast pusher may be told: where to POST, which static headers, and how hostile to be.

One set of checks serves the CLI flags (live mode) and `POST /_emulator/broadcast` (a replayed day), so a
bad value is refused the same way whichever way it arrives, with a message naming the setting. Header
values (the token) never appear in any message or answer: only header names do.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

TOKEN_ENV = "EMULATOR_BROADCAST_TOKEN"  # live mode: sent as `Authorization: Bearer <token>`, never printed
MAX_CONCURRENCY = 1000
MAX_DELAY_MS = 600_000.0
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the pusher writes itself.
_RESERVED_HEADERS = frozenset({"content-type", "content-encoding", "content-length", "host", "x-test-connection"})


@dataclass(frozen=True, slots=True)
class BroadcastSettings:
    """How a pusher misbehaves, as Broadcast may (no retries, no order, no completeness promised).

    Shares are drawn per generation id from (seed, id), so the same ids are dropped, duplicated, ... in every
    run, whatever the order or concurrency.
    """

    drop_share: float = 0.0  # never sent
    duplicate_share: float = 0.0  # the same body sent again, later
    delay_ms: float = 0.0  # each POST waits a uniform random delay up to this (also before a duplicate)
    reorder_window: int = 0  # shuffle within consecutive windows of this many deliveries (0 or 1: in order)
    error_span_share: float = 0.0  # an error span (client disconnected, no usage) instead of the delivery
    gzip_share: float = 0.0  # Content-Encoding: gzip
    string_ints_share: float = 0.0  # intValue as the OTLP JSON mapping's decimal string, not a number
    mismatch_share: float = 0.0  # gen_ai.usage.total_cost differs from the record (not with an error span)
    concurrency: int = 8  # POSTs in flight at most
    post_timeout_s: float = 10.0  # per POST; a timeout counts as a connection error
    seed: int = 0  # varies the draws; the emulator's --seed unless given

    def public(self) -> dict[str, Any]:
        return asdict(self)


_SHARES = frozenset(f.name for f in fields(BroadcastSettings) if f.name.endswith("_share"))
SETTING_NAMES = frozenset(f.name for f in fields(BroadcastSettings))


def check_settings(values: Mapping[str, Any], *, seed: int) -> BroadcastSettings:
    """Settings from JSON-like values (absent ones default); ValueError naming the first bad or unknown one."""
    unknown = set(values) - SETTING_NAMES
    if unknown:
        raise ValueError(f"unknown broadcast settings: {sorted(unknown)}; known: {sorted(SETTING_NAMES)}")
    checked: dict[str, Any] = {"seed": seed}
    for name, value in values.items():
        checked[name] = check_setting(name, value)
    return BroadcastSettings(**checked)


def check_setting(name: str, value: Any) -> Any:
    """One setting's value, converted; ValueError saying what `name` accepts."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r:.40}")
    if name in _SHARES:
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a share from 0 to 1, got {value!r}")
        return float(value)
    if name in ("reorder_window", "concurrency", "seed"):
        if value != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if name == "concurrency" and not 1 <= value <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be from 1 to {MAX_CONCURRENCY}, got {value!r}")
        if name == "reorder_window" and value < 0:
            raise ValueError(f"reorder_window must be a non-negative integer, got {value!r}")
        return int(value)
    if name == "delay_ms" and not 0 <= value <= MAX_DELAY_MS:
        raise ValueError(f"delay_ms must be from 0 to {MAX_DELAY_MS:.0f}, got {value!r}")
    if name == "post_timeout_s" and not 0 < value <= 600:
        raise ValueError(f"post_timeout_s must be above 0 and at most 600, got {value!r}")
    return float(value)


def check_url(value: Any, name: str = "url") -> str:
    """An absolute http(s) URL with a host."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an http:// or https:// URL")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host")
    return value


def shown_url(url: str) -> str:
    """The URL as logs and answers show it: without userinfo, query or fragment (they may carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    hidden = " (query hidden)" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + hidden


def check_headers(value: Any, name: str = "headers") -> dict[str, str]:
    """Static headers `{"Name": "value"}`: token-safe names, values without line breaks."""
    if not isinstance(value, Mapping):
        raise ValueError(f'{name} must be an object of header names and values, e.g. {{"Authorization": "Bearer …"}}')
    headers: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _HEADER_NAME.match(key):
            raise ValueError(f"{name}: {key!r:.40} is not a valid header name")
        if key.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name}: {key} is written by the pusher itself")
        if not isinstance(item, str) or "\r" in item or "\n" in item:
            raise ValueError(f"{name}: the value of {key} must be a string without line breaks")  # never the value
        headers[key] = item
    return headers


def parse_header_line(line: str) -> tuple[str, str]:
    """`Name: value` of `--broadcast-header`; ValueError (without the value) when it is not one."""
    key, sep, item = line.partition(":")
    key, item = key.strip(), item.strip()
    if not sep or not key:
        raise ValueError("must be 'Name: value'")
    check_headers({key: item}, "--broadcast-header")
    return key, item


def with_token(headers: Mapping[str, str], token: str | None) -> dict[str, str]:
    """The headers plus `Authorization: Bearer <token>` when a token is given; ValueError if both name one."""
    merged = dict(headers)
    if token:
        if any(k.lower() == "authorization" for k in merged):
            raise ValueError(f"give the token either as an Authorization header or by {TOKEN_ENV}, not both")
        merged["Authorization"] = f"Bearer {token}"
    return merged
