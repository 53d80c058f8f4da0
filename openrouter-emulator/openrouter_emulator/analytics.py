"""The analytics query engine: groups the visible generations the way OpenRouter's analytics backend does.

It answers an already validated `AnalyticsQuery` (see `analytics_query`) over the synthetic dataset,
vectorised with numpy so a query over a million generations stays fast.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np

from openrouter_emulator.analytics_catalogue import (
    ARRAY_OPERATORS,
    CATEGORIES,
    ENRICHED_DIMENSIONS,
    KEY_MEMBER,
    KEY_WORKSPACE,
    METRICS,
    SCALAR_OPERATORS,
)
from openrouter_emulator.analytics_query import AnalyticsQuery, Filter
from openrouter_emulator.dataset import (
    BYOK,
    ENDPOINT_PROVIDER,
    EPOCH,
    US_PER_DAY,
    US_PER_SECOND,
    DayColumns,
    UsageDataset,
    day_start_us,
)

MAX_ANALYTICS_ROWS = 10_000
_METRIC_COLUMNS = {"total_usage": "usage", "tokens_prompt": "tokens_prompt",
                   "tokens_completion": "tokens_completion", "reasoning_tokens": "tokens_reasoning",
                   "cached_tokens": "tokens_cached"}


class Selection:
    """The visible generations inside a time range ([start, end), or [start, end] when `inclusive_end`)."""

    def __init__(self, dataset: UsageDataset, start_us: int, end_us: int, now: float,
                 inclusive_end: bool = False) -> None:
        self.parts: list[tuple[DayColumns, np.ndarray]] = []
        for date in dataset.dates(now):
            first = day_start_us(date)
            if first + US_PER_DAY <= start_us or first > end_us or (first == end_us and not inclusive_end):
                continue
            day = dataset.day(date, now)
            if day is None:
                continue
            c = day.columns
            lo = int(np.searchsorted(c.created_us, start_us, side="left"))
            hi = int(np.searchsorted(c.created_us, end_us, side="right" if inclusive_end else "left"))
            rows = lo + np.flatnonzero(c.visible_at[lo:hi] <= now)
            if len(rows):
                self.parts.append((c, rows))
        self.size = sum(len(rows) for _, rows in self.parts)
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            arrays = [getattr(c, name)[rows] for c, rows in self.parts]
            self._columns[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        return self._columns[name]

    def codes(self, dimension: str) -> np.ndarray:
        """Category codes of a dimension per row, -1 where the generation has no value."""
        if dimension == "model":
            return self.column("model").astype(np.int64)
        if dimension == "provider":
            return ENDPOINT_PROVIDER[self.column("endpoint")].astype(np.int64)
        if dimension == "api_key_id":
            return self.column("api_key").astype(np.int64)
        if dimension == "external_user":
            return self.column("external_user").astype(np.int64)
        if dimension == "finish_reason":
            return self.column("finish").astype(np.int64)
        if dimension in ("origin", "app"):
            return self.column("app").astype(np.int64)
        if dimension == "user":
            return KEY_MEMBER[self.column("api_key")]
        if dimension == "workspace":
            return KEY_WORKSPACE[self.column("api_key")]
        raise KeyError(dimension)

    def id_bytes(self) -> np.ndarray:
        """Every row's generation id as fixed-width bytes, for vectorised filtering and ordering."""
        if "id_bytes" not in self._columns:
            seconds = (self.column("created_us") // US_PER_SECOND).astype("S10")
            prefix = np.char.add(np.char.add(b"gen-", seconds), b"-")
            self._columns["id_bytes"] = np.char.add(prefix, self.column("id_suffix"))
        return self._columns["id_bytes"]

    def ids(self, positions: np.ndarray) -> list[str]:
        seconds = (self.column("created_us")[positions] // US_PER_SECOND).tolist()
        suffixes = self.column("id_suffix")[positions].tolist()
        return [f"gen-{s}-{x.decode()}" for s, x in zip(seconds, suffixes, strict=False)]


def _compare(left: str, right: str, operator: str) -> bool:
    try:
        a: float | str = float(left)
        b: float | str = float(right)
    except ValueError:
        a, b = left, right
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[operator]  # type: ignore[operator]


def _unresolved(f: Filter) -> list[str]:
    """Warnings for values of an enriched dimension's filter that name no underlying id (e.g. a label)."""
    if f.field not in ENRICHED_DIMENSIONS or f.operator in SCALAR_OPERATORS[2:]:
        return []
    known = set().union(*(c.ids for c in CATEGORIES[f.field]))
    return [f"Could not resolve {f.field} filter value {v!r}" for v in f.values if v.lower() not in known]


def _filter_mask(selection: Selection, f: Filter) -> np.ndarray:
    if f.field == "generation_id":
        ids = selection.id_bytes()
        wanted = np.array([v.encode() for v in f.values])
        if f.operator in ("eq", "in"):
            return np.isin(ids, wanted)
        if f.operator in ("neq", "not_in"):
            return ~np.isin(ids, wanted)
        bound = wanted[0]
        return {"gt": ids > bound, "gte": ids >= bound, "lt": ids < bound, "lte": ids <= bound}[f.operator]
    categories = CATEGORIES[f.field]
    values = [v.lower() for v in f.values]
    if f.operator in SCALAR_OPERATORS[2:]:
        ok = [_compare(c.sort_id, f.values[0], f.operator) for c in categories]
    else:
        hit = [any(v in c.ids for v in values) for c in categories]
        ok = hit if f.operator in ("eq", "in") else [not h for h in hit]
    unset_ok = f.include_unset and f.operator in ARRAY_OPERATORS
    lookup = np.array(ok + [unset_ok], dtype=bool)  # code -1 (unset) reads the last entry
    return lookup[selection.codes(f.field)]


def _bucket_starts(created_us: np.ndarray, granularity: str) -> np.ndarray:
    if granularity == "week":  # ISO weeks start on Monday; 1970-01-01 was a Thursday
        days = created_us // US_PER_DAY
        return ((days + 3) // 7 * 7 - 3) * US_PER_DAY
    unit = {"minute": "m", "hour": "h", "day": "D", "month": "M"}[granularity]
    return created_us.astype("datetime64[us]").astype(f"datetime64[{unit}]").astype("datetime64[us]").astype(np.int64)


def _iso_ms(us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{us // 1000 % 1000:03d}Z"


def _dense_rank(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)


def run_query(dataset: UsageDataset, query: AnalyticsQuery, now: float, max_rows: int, *, labels: bool = True,
              inclusive_end: bool = False) -> dict[str, Any]:
    """Group the visible generations like the analytics backend: by time bucket and dimensions.

    `labels`: enriched dimensions answer human-readable labels (else underlying ids); `inclusive_end`:
    `time_range.end` is included (else the range is half-open).
    """
    started = time.perf_counter()
    selection = Selection(dataset, query.start_us, query.end_us, now, inclusive_end)
    warnings = [w for f in query.filters for w in _unresolved(f)]
    positions = np.arange(selection.size)
    if selection.size:
        mask = np.ones(selection.size, dtype=bool)
        for f in query.filters:
            mask &= _filter_mask(selection, f)
        positions = np.flatnonzero(mask)
    limit = max(1, min(query.limit, max_rows, MAX_ANALYTICS_ROWS))
    rows: list[dict[str, Any]] = []
    truncated = False
    if len(positions):
        rows, truncated = _aggregate(selection, positions, query, limit, labels)
    payload: dict[str, Any] = {"data": rows, "metadata": {
        "query_time_ms": round((time.perf_counter() - started) * 1000, 3), "row_count": len(rows),
        "truncated": truncated}}
    if warnings:
        payload["warnings"] = sorted(set(warnings))
    return {"data": payload}


def _aggregate(selection: Selection, positions: np.ndarray, query: AnalyticsQuery,
               limit: int, labels: bool) -> tuple[list[dict[str, Any]], bool]:
    created = selection.column("created_us")[positions]
    buckets = _bucket_starts(created, query.granularity) if query.granularity else None
    codes = {d: selection.codes(d)[positions] for d in query.dimensions if d != "generation_id"}
    if "generation_id" in query.dimensions:  # every generation is its own group
        inverse = np.arange(len(positions))
        first = inverse
        group_key = inverse
    else:
        key = np.zeros(len(positions), dtype=np.int64)
        if buckets is not None:
            key = _dense_rank(buckets)
        for d, c in codes.items():
            key = key * (len(CATEGORIES[d]) + 1) + (c + 1)
        group_key, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    groups = len(first)

    counts = np.bincount(inverse, minlength=groups).astype(np.float64)
    values: dict[str, np.ndarray] = {"request_count": counts}
    for name in query.metrics:
        if name == "byok_request_count":
            byok = (selection.column("flags")[positions] & BYOK) > 0
            values[name] = np.bincount(inverse, weights=byok, minlength=groups)
        elif name == "tokens_total":
            tokens = (selection.column("tokens_prompt")[positions].astype(np.float64)
                      + selection.column("tokens_completion")[positions])
            values[name] = np.bincount(inverse, weights=tokens, minlength=groups)
        elif name == "avg_latency":
            total = np.bincount(inverse, weights=selection.column("latency_ms")[positions], minlength=groups)
            values[name] = total / np.maximum(counts, 1)
        elif name in _METRIC_COLUMNS:
            column = selection.column(_METRIC_COLUMNS[name])[positions].astype(np.float64)
            values[name] = np.bincount(inverse, weights=column, minlength=groups)

    group_time = buckets[first] if buckets is not None else created[first]
    sort_keys: list[np.ndarray] = []  # primary first
    field = query.order_field
    if field is not None:
        if field == "date":
            primary = group_time.astype(np.float64)
        elif field in values:
            primary = values[field]
        elif field == "generation_id":
            primary = _dense_rank(selection.id_bytes()[positions[first]]).astype(np.float64)
        else:
            shown = np.array([c.shown(labels) for c in CATEGORIES[field]] + ["\uffff"])
            primary = _dense_rank(shown[codes[field][first]]).astype(np.float64)
        sort_keys.append(-primary if query.order_direction == "desc" else primary)
    if buckets is not None:
        sort_keys.append(group_time)
    sort_keys += [-counts, np.asarray(group_key)]
    order = np.lexsort(sort_keys[::-1])
    truncated = groups > limit
    chosen = order[:limit]

    columns: list[tuple[str, list[Any]]] = []
    if buckets is not None:
        columns.append((f"date__{query.granularity}", [_iso_ms(int(us)) for us in group_time[chosen]]))
    for d in query.dimensions:
        if d == "generation_id":
            columns.append((d, selection.ids(positions[first[chosen]])))
        else:
            shown_names = [c.shown(labels) for c in CATEGORIES[d]] + [None]
            columns.append((d, [shown_names[c] for c in codes[d][first[chosen]].tolist()]))
    for name in query.metrics:
        picked = values[name][chosen]
        if METRICS[name].is_count:
            columns.append((name, [str(v) for v in np.rint(picked).astype(np.int64).tolist()]))
        else:
            columns.append((name, picked.tolist()))
    names = [n for n, _ in columns]
    return [dict(zip(names, row, strict=False)) for row in zip(*(v for _, v in columns), strict=False)], truncated
