"""InfluxQL text built from values: quoted identifiers and literals, and a UTC day's time bounds."""

from __future__ import annotations

import datetime as dt

from usage_pipeline.influx.points import MEASUREMENT, TAGS
from usage_pipeline.openrouter.day import day_bounds


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def time_literals(day: dt.date) -> tuple[str, str]:
    """The day's bounds (`day_bounds`: [00:00, next 00:00) UTC) as InfluxQL RFC 3339 literals."""
    start, end = day_bounds(day)
    return quote_literal(start.strftime("%Y-%m-%dT%H:%M:%SZ")), quote_literal(end.strftime("%Y-%m-%dT%H:%M:%SZ"))


def day_where(day: dt.date) -> str:
    """`FROM generations WHERE <the UTC day>`: the tail of every per-day query."""
    start, end = time_literals(day)
    return f"FROM {quote_ident(MEASUREMENT)} WHERE time >= {start} AND time < {end}"


def stored_points_query(start_ns: int, end_ns: int) -> str:
    """`SELECT` of each point's generation id, API key label and tags, with time in [start_ns, end_ns)."""
    columns = ", ".join(quote_ident(name) for name in ("generation_id", "api_key", *TAGS))
    return f"SELECT {columns} FROM {quote_ident(MEASUREMENT)} WHERE time >= {int(start_ns)} AND time < {int(end_ns)}"


def delete_point(model: str, provider: str | None, time_ns: int) -> str:
    """`DELETE` of the one point with this identity (1.x; `provider = ''` matches an absent tag)."""
    return (f"DELETE FROM {quote_ident(MEASUREMENT)} WHERE {quote_ident('model')} = {quote_literal(model)} "
            f"AND {quote_ident('provider')} = {quote_literal(provider or '')} AND time = {int(time_ns)}")
