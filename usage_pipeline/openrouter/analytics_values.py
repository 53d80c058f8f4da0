"""The values of an analytics row, read as OpenRouter sends them and never coerced.

Counts come back as digit strings ("1523"), money as JSON numbers, time buckets as ISO 8601 strings under
`date__<granularity>` or `created_at__<granularity>`. The day's counts, the window planner and the history
all read rows through these, so a value is judged the same way wherever it lands.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from usage_pipeline.openrouter.generation import parse_created_at

_DIGITS = re.compile(r"[0-9]+")
BIGINT_MAX = 2**63 - 1  # DuckDB's BIGINT, InfluxDB's integer
EXACT_FLOAT_MAX = 2**53  # a larger integer would lose digits as a DOUBLE


def shown(value: Any) -> str:
    """A value with its JSON type, short enough for a one-line error."""
    return f"{type(value).__name__} {value!r}"[:120]


def count(value: Any) -> int | None:
    """A count as received: a digit string or a non-negative integer within 64 bits; null stays None.
    Raises ValueError saying what it got otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        number = value
    else:
        raise ValueError(f"must be a whole number (a digit string or a non-negative integer), got {shown(value)}")
    if number > BIGINT_MAX:
        raise ValueError(f"{value!r} does not fit a 64-bit integer")
    return number


def money(value: Any) -> float:
    """USD as received: a finite JSON number (an integer only if a DOUBLE holds it exactly)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be finite, got {value!r}")
    if isinstance(value, int) and abs(value) > EXACT_FLOAT_MAX:
        raise ValueError(f"{value} would lose digits as a double")
    return float(value)


def bucket_key(row: dict[str, Any], granularity: str) -> str | None:
    """Which key of the row holds its time bucket, if any."""
    return next((key for key in (f"date__{granularity}", f"created_at__{granularity}") if key in row), None)


def bucket_start(row: dict[str, Any], granularity: str) -> dt.datetime | None:
    """The start of the row's time bucket (UTC), None when the row has none; ValueError when it is not an
    ISO 8601 date-time string."""
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
