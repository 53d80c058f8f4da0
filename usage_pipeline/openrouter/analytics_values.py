"""`POST /analytics/query` as OpenRouter takes and answers it, and each row's values read as sent, never coerced
(counts as digit strings, money as JSON numbers, time buckets as ISO 8601 strings under `date__<granularity>` or
`created_at__<granularity>`), so the day's counts, the windows and the history judge a value the same way."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.generation import FLOAT_EXACT_INT, INT64_MAX, parse_created_at

ANALYTICS_MAX_ROWS = 10_000
_DIGITS = re.compile(r"[0-9]+")
T = TypeVar("T")


def iso_ms(moment: dt.datetime) -> str:
    """The time_range form the analytics endpoint takes: UTC, millisecond precision, `Z`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def analytics_body(*, metrics: Sequence[str], start: dt.datetime, end: dt.datetime, dimensions: Sequence[str] = (),
                   granularity: str | None = None, limit: int = ANALYTICS_MAX_ROWS) -> dict[str, Any]:
    """The JSON body of one `POST /analytics/query` over [start, end)."""
    body: dict[str, Any] = {"metrics": list(metrics), "time_range": {"start": iso_ms(start), "end": iso_ms(end)},
                            "limit": limit}
    if dimensions:
        body["dimensions"] = list(dimensions)
    if granularity:
        body["granularity"] = granularity
    return body


@dataclass(frozen=True)
class AnalyticsResult:
    rows: list[dict[str, Any]]
    truncated: bool
    row_count: int


def read_analytics(payload: dict[str, Any]) -> AnalyticsResult:
    """The rows and the `truncated` flag of an answer; OpenRouterError for another shape."""
    try:
        meta, rows = payload["data"]["metadata"], list(payload["data"]["data"])
        return AnalyticsResult(rows=rows, truncated=bool(meta["truncated"]),
                               row_count=int(meta.get("row_count", len(rows))))
    except (KeyError, TypeError) as exc:
        raise OpenRouterError(f"POST /analytics/query: unexpected answer shape (missing {exc})") from exc


def shown(value: Any) -> str:
    """A value with its JSON type, short enough for a one-line error."""
    return f"{type(value).__name__} {value!r}"[:120]


def count(value: Any) -> int | None:
    """A count as received: a digit string or a non-negative integer within 64 bits; null stays None."""
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        number = value
    else:
        raise ValueError(f"must be a whole number (a digit string or a non-negative integer), got {shown(value)}")
    if number > INT64_MAX:  # DuckDB's BIGINT, InfluxDB's integer
        raise ValueError(f"{value!r} does not fit a 64-bit integer")
    return number


def money(value: Any) -> float:
    """USD as received: a finite JSON number (an integer only if a DOUBLE holds it exactly)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be finite, got {value!r}")
    if isinstance(value, int) and abs(value) > FLOAT_EXACT_INT:
        raise ValueError(f"{value} would lose digits as a double")
    return float(value)


def read_as(error: Callable[[str], Exception], what: str, reader: Callable[..., T], *args: Any) -> T:
    """`reader(*args)`, its ValueError raised again as the caller's `error`, `what` (its row and field) first."""
    try:
        return reader(*args)
    except ValueError as exc:
        raise error(f"{what}{exc}") from None


def bucket_key(row: dict[str, Any], granularity: str) -> str | None:
    return next((key for key in (f"date__{granularity}", f"created_at__{granularity}") if key in row), None)


def bucket_start(row: dict[str, Any], granularity: str) -> dt.datetime | None:
    """The start of the row's time bucket (UTC), None when the row has none."""
    key = bucket_key(row, granularity)
    if key is None or row[key] is None:
        return None
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an ISO 8601 date-time string, got {shown(value)}")
    try:
        return parse_created_at(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{key} is not an ISO 8601 date-time, got {value[:60]!r}") from None
