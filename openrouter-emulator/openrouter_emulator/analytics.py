"""The analytics query engine: groups usage the way OpenRouter's analytics backend does.

It answers an already validated `AnalyticsQuery` (see `analytics_query`) over the visible generations
and, for queries whose dimensions and filters all reach 365 days, the aggregate-only history cells
(`history`), vectorised with numpy so a query over a million generations or a year of days stays fast.
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
    HISTORY_DIMENSIONS,
    HISTORY_GRANULARITIES,
    METRICS,
    SCALAR_OPERATORS,
)
from openrouter_emulator.analytics_query import AnalyticsQuery, Filter
from openrouter_emulator.analytics_rows import Facts, Selection, cell_codes, cell_facts, generation_facts
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.history import History
from openrouter_emulator.isotime import EPOCH, US_PER_DAY

MAX_ANALYTICS_ROWS = 10_000


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
    return _category_mask(selection.codes(f.field), f)


def _category_mask(codes: np.ndarray, f: Filter) -> np.ndarray:
    """Which rows a filter on a category dimension keeps, from the rows' category codes (-1: unset)."""
    categories = CATEGORIES[f.field]
    values = [v.lower() for v in f.values]
    if f.operator in SCALAR_OPERATORS[2:]:
        ok = [_compare(c.sort_id, f.values[0], f.operator) for c in categories]
    else:
        hit = [any(v in c.ids for v in values) for c in categories]
        ok = hit if f.operator in ("eq", "in") else [not h for h in hit]
    unset_ok = f.include_unset and f.operator in ARRAY_OPERATORS
    lookup = np.array(ok + [unset_ok], dtype=bool)  # code -1 (unset) reads the last entry
    return lookup[codes]


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
              inclusive_end: bool = False, history: History | None = None, history_days: int = 0) -> dict[str, Any]:
    """Group the visible generations (and history cells) like the analytics backend: by time bucket and
    dimensions.

    `labels`: enriched dimensions answer human-readable labels (else underlying ids); `inclusive_end`:
    `time_range.end` is included (else the range is half-open); `history`: the aggregate-only days, seen by
    queries whose dimensions and filters all reach 365 days, at day, week or month granularity or none.
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
    facts = generation_facts(selection, positions, query.dimensions, query.metrics)
    fields = {*query.dimensions, *(f.field for f in query.filters)}
    if history is not None and fields <= HISTORY_DIMENSIONS and query.granularity in HISTORY_GRANULARITIES:
        cells = history.cells(query.start_us, query.end_us, now, history_days, inclusive_end)
        if len(cells):
            keep = np.ones(len(cells), dtype=bool)
            for f in query.filters:
                keep &= _category_mask(cell_codes(cells, f.field), f)
            facts = cell_facts(cells.take(np.flatnonzero(keep)), query.dimensions, query.metrics).then(facts)
    limit = max(1, min(query.limit, max_rows, MAX_ANALYTICS_ROWS))
    rows: list[dict[str, Any]] = []
    truncated = False
    if len(facts):
        rows, truncated = _aggregate(facts, query, limit, labels)
    payload: dict[str, Any] = {"data": rows, "metadata": {
        "query_time_ms": round((time.perf_counter() - started) * 1000, 3), "row_count": len(rows),
        "truncated": truncated}}
    if warnings:
        payload["warnings"] = sorted(set(warnings))
    return {"data": payload}


def _aggregate(facts: Facts, query: AnalyticsQuery, limit: int, labels: bool) -> tuple[list[dict[str, Any]], bool]:
    created = facts.time_us
    buckets = _bucket_starts(created, query.granularity) if query.granularity else None
    codes = facts.codes
    if "generation_id" in query.dimensions:  # every generation is its own group
        inverse = np.arange(len(facts))
        first = inverse
        group_key = inverse
    else:
        key = np.zeros(len(facts), dtype=np.int64)
        if buckets is not None:
            key = _dense_rank(buckets)
        for d, c in codes.items():
            key = key * (len(CATEGORIES[d]) + 1) + (c + 1)
        group_key, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    groups = len(first)

    counts = np.bincount(inverse, weights=facts.sums["request_count"], minlength=groups)
    values: dict[str, np.ndarray] = {"request_count": counts}
    for name in query.metrics:
        if name in facts.sums and name != "request_count":
            values[name] = np.bincount(inverse, weights=facts.sums[name], minlength=groups)
    if "avg_latency" in values:
        values["avg_latency"] = values["avg_latency"] / np.maximum(counts, 1)

    group_time = buckets[first] if buckets is not None else created[first]
    sort_keys: list[np.ndarray] = []  # primary first
    field = query.order_field
    if field is not None:
        if field == "date":
            primary = group_time.astype(np.float64)
        elif field in values:
            primary = values[field]
        elif field == "generation_id":
            assert facts.selection is not None and facts.positions is not None  # generations only, never cells
            primary = _dense_rank(facts.selection.id_bytes()[facts.positions[first]]).astype(np.float64)
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
            assert facts.selection is not None and facts.positions is not None
            columns.append((d, facts.selection.ids(facts.positions[first[chosen]])))
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
