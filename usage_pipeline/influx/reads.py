"""The ledger's read path: per-day counts and sums, and the day's points streamed as DataFrames with
one stable dtype per column, whichever columns a chunk happens to hold."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from usage_pipeline.influx.connection import InfluxConnection, result_errors
from usage_pipeline.influx.errors import InfluxQueryError
from usage_pipeline.influx.influxql import day_where, quote_ident
from usage_pipeline.influx.points import FIELD_TYPES, TAGS

_DTYPES: dict[type, Any] = {float: "float64", int: "Int64", bool: "boolean", str: "string"}  # pandas dtype names
FRAME_COLUMNS: tuple[str, ...] = ("time", *TAGS, *FIELD_TYPES)


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
    """Points and distinct generation ids in the UTC day."""
    gid = quote_ident("generation_id")
    series = connection.query(f"SELECT COUNT({gid}) AS points, COUNT(DISTINCT({gid})) AS ids {day_where(day)}")
    if not series:
        return DayCounts(points=0, distinct_ids=0)
    row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=False))
    return DayCounts(points=int(row["points"] or 0), distinct_ids=int(row["ids"] or 0))


def per_model(connection: InfluxConnection, aggregate: str, day: dt.date) -> dict[str, Any]:
    """One InfluxQL aggregate (`SUM("usage")`, ...) per model in the UTC day."""
    series = connection.query(f"SELECT {aggregate} AS v {day_where(day)} GROUP BY {quote_ident('model')}")
    return {s["tags"]["model"]: s["values"][0][s["columns"].index("v")] for s in series}


def iter_day_frames(connection: InfluxConnection, day: dt.date, chunk_size: int = 10000) -> Iterator[pd.DataFrame]:
    """Stream the day's points, one DataFrame per server chunk, so memory is bounded by chunk_size."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    influxql = f"SELECT * {day_where(day)}"
    params = {"chunked": "true", "chunk_size": str(chunk_size)}
    with connection.post_query(influxql, params, stream=True) as response:
        # Chunked responses are newline-delimited JSON documents, one per chunk.
        for line in response.iter_lines(chunk_size=1 << 16):
            if not line:
                continue
            payload = json.loads(line)
            errors = result_errors(payload)
            if errors:
                raise InfluxQueryError(connection.redact(f"chunked query failed: {'; '.join(errors)}"))
            for result in payload.get("results") or []:
                for series in result.get("series") or []:
                    yield series_frame(series)
