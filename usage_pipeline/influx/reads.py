"""The ledger's read path behind `store.InfluxStore`: per-day counts and sums, the day's points streamed as
DataFrames with one stable dtype per column (whichever columns a chunk holds), and the points in a time range."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd

from usage_pipeline.influx.connection import InfluxConnection, chunk_series
from usage_pipeline.influx.influxql import day_where, quote_ident, stored_points_query
from usage_pipeline.influx.points import FIELD_TYPES, TAGS
from usage_pipeline.influx.ranks import StoredPoint

_DTYPES: dict[type, Any] = {float: "float64", int: "Int64", bool: "boolean", str: "string"}  # pandas dtype names
FRAME_COLUMNS: tuple[str, ...] = ("time", *TAGS, *FIELD_TYPES)
T = TypeVar("T")


@dataclass(frozen=True)
class DayCounts:
    """Points vs distinct generation ids in one UTC day: equal iff the day has no duplicate."""

    points: int
    distinct_ids: int


def series_frame(series: Mapping[str, Any]) -> pd.DataFrame:
    """One /query series as a DataFrame with every schema column and a stable dtype per column."""
    frame = pd.DataFrame(series.get("values") or [], columns=series["columns"])
    extra = [column for column in frame.columns if column not in FRAME_COLUMNS]
    frame = frame.reindex(columns=[*FRAME_COLUMNS, *extra])
    frame["time"] = frame["time"].astype("int64")
    for tag in TAGS:
        frame[tag] = frame[tag].astype("string")
    for name, kind in FIELD_TYPES.items():
        frame[name] = frame[name].astype(_DTYPES[kind])
    return frame


def day_counts(connection: InfluxConnection, day: dt.date) -> DayCounts:
    gid = quote_ident("generation_id")
    series = connection.query(f"SELECT COUNT({gid}) AS points, COUNT(DISTINCT({gid})) AS ids {day_where(day)}")
    if not series:
        return DayCounts(points=0, distinct_ids=0)
    row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=False))
    return DayCounts(points=int(row["points"] or 0), distinct_ids=int(row["ids"] or 0))


def per_model(connection: InfluxConnection, aggregate: str, day: dt.date, kind: Callable[[Any], T]) -> dict[str, T]:
    """One InfluxQL aggregate (`SUM("usage")`, ...) per model in the UTC day, as `kind` (null: zero)."""
    series = connection.query(f"SELECT {aggregate} AS v {day_where(day)} GROUP BY {quote_ident('model')}")
    return {s["tags"]["model"]: kind(s["values"][0][s["columns"].index("v")] or 0) for s in series}


def iter_day_frames(connection: InfluxConnection, day: dt.date, chunk_size: int = 10000) -> Iterator[pd.DataFrame]:
    for series in _chunked_series(connection, f"SELECT * {day_where(day)}", chunk_size):
        yield series_frame(series)


def stored_points(series: Mapping[str, Any]) -> list[StoredPoint]:
    """The points of one series of `SELECT generation_id, api_key, model, provider`: a point without a
    generation_id string (none the ledger writes) is not an identity and is left out."""
    columns = series["columns"]
    at = {name: columns.index(name) for name in ("time", "generation_id", "api_key", *TAGS) if name in columns}
    found = []
    for row in series.get("values") or []:
        gen_id = row[at["generation_id"]]
        model = row[at["model"]] if "model" in at else None
        if not isinstance(gen_id, str) or not gen_id or not isinstance(model, str):
            continue
        provider = row[at["provider"]] if "provider" in at else None
        api_key = row[at["api_key"]] if "api_key" in at else None
        found.append(StoredPoint(gen_id, model, provider if isinstance(provider, str) and provider else None,
                                 int(row[at["time"]]), api_key if isinstance(api_key, str) else None))
    return found


def stored(connection: InfluxConnection, start_ns: int, end_ns: int, chunk_size: int = 10000) -> list[StoredPoint]:
    chunks = _chunked_series(connection, stored_points_query(start_ns, end_ns), chunk_size)
    return [point for series in chunks for point in stored_points(series)]


def _chunked_series(connection: InfluxConnection, influxql: str, chunk_size: int) -> Iterator[dict[str, Any]]:
    """The series of a chunked /query, one server chunk at a time."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    params = {"chunked": "true", "chunk_size": str(chunk_size)}
    with connection.post_query(influxql, params, stream=True) as response:
        for line in response.iter_lines(chunk_size=1 << 16):
            if line:
                yield from chunk_series(line, connection.settings)
