"""A year of OpenRouter's own daily aggregates (its model and api_key_id dimensions reach 365 days), for the
days the ledger did not capture. Each view is asked over the whole span at once (a year is far under the row
limit); a span that still comes back truncated is asked again in halves, as there is no cursor."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.openrouter import analytics_values
from usage_pipeline.openrouter.analytics_values import read_as, shown
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.source import OpenRouterClient

HISTORY_METRICS = ("request_count", "total_usage", "tokens_prompt", "tokens_completion", "reasoning_tokens",
                   "cached_tokens")


class HistoryError(OpenRouterError):
    """An answer the history cannot store as received; the message names the row (or model) and field."""


@dataclass(frozen=True)
class AggregateRow:
    """One analytics row: a day and a model or API key label, with OpenRouter's figures for them."""

    day: dt.date
    label: str | None  # as answered; None when the row names no model or key
    requests: int
    usage: float  # analytics total_usage, USD
    tokens_prompt: int | None
    tokens_completion: int | None
    tokens_reasoning: int | None
    tokens_cached: int | None


@dataclass
class HistoryRead:
    """The days asked for and what analytics answered for them, with the cost in queries."""

    days: list[dt.date]
    by_model: list[AggregateRow] = field(default_factory=list)
    by_api_key: list[AggregateRow] = field(default_factory=list)
    analytics_queries: int = 0
    splits: int = 0


def read_history(client: OpenRouterClient, days: Iterable[dt.date]) -> HistoryRead:
    """OpenRouter's per-model and per-key figures for `days` (asked as one span; days not asked are dropped)."""
    asked = set(days)
    read = HistoryRead(sorted(asked))
    if not asked:
        return read
    for dimension, rows in (("model", read.by_model), ("api_key_id", read.by_api_key)):
        rows.extend(r for r in _read_span(client, dimension, read.days[0], read.days[-1], read) if r.day in asked)
    return read


def _read_span(client: OpenRouterClient, dimension: str, first: dt.date, last: dt.date,
               read: HistoryRead) -> list[AggregateRow]:
    start, end = day_bounds(first)[0], day_bounds(last)[1]
    result = client.analytics(metrics=HISTORY_METRICS, dimensions=[dimension], granularity="day", start=start, end=end)
    read.analytics_queries += 1
    if not result.truncated:
        return parse_rows(result.rows, dimension, first, last)
    if first == last:
        raise HistoryError(f"analytics by {dimension} for {first} came back truncated at {result.row_count} rows "
                           "even for a single day; it cannot be split further")
    read.splits += 1
    middle = first + (last - first) // 2
    return _read_span(client, dimension, first, middle, read) + _read_span(client, dimension,
                                                                           middle + dt.timedelta(days=1), last, read)


def parse_rows(rows: list[Any], dimension: str, first: dt.date, last: dt.date) -> list[AggregateRow]:
    """Analytics rows of days `first`..`last` by `dimension`, strictly; a row of the day after `last` (a
    server whose `time_range.end` is inclusive) is left out, anything else unexpected is refused."""
    parsed = []
    for index, row in enumerate(rows):
        where = f"analytics row {index} by {dimension} for {first}..{last}"
        if not isinstance(row, dict):
            raise HistoryError(f"{where}: not a JSON object, got {shown(row)}")
        day = _bucket_day(row, where)
        if day == last + dt.timedelta(days=1):
            continue
        if not first <= day <= last:
            raise HistoryError(f"{where}: its day {day} lies outside the days asked")
        label = row.get(dimension)
        if label is not None and not isinstance(label, str):
            raise HistoryError(f"{where} ({day}): {dimension} must be a string or null, got {shown(label)}")
        where = f"analytics row {index} ({day}, {dimension} {label!r})"
        requests = _count(row, "request_count", where)
        if requests is None:
            raise HistoryError(f"{where}: request_count is missing or null")
        usage = read_as(HistoryError, f"{where}: total_usage ", analytics_values.money, row.get("total_usage"))
        parsed.append(AggregateRow(day, label, requests, usage,
                                   _count(row, "tokens_prompt", where), _count(row, "tokens_completion", where),
                                   _count(row, "reasoning_tokens", where), _count(row, "cached_tokens", where)))
    return parsed


def _bucket_day(row: dict[str, Any], where: str) -> dt.date:
    moment = read_as(HistoryError, f"{where}: ", analytics_values.bucket_start, row, "day")
    if moment is None:
        raise HistoryError(f"{where}: date__day must be an ISO 8601 date-time string, got none")
    if moment.time() != dt.time():
        raise HistoryError(f"{where}: {analytics_values.bucket_key(row, 'day')} {moment.isoformat()} is not a "
                           "UTC midnight")
    return moment.date()


def _count(row: dict[str, Any], name: str, where: str) -> int | None:
    return read_as(HistoryError, f"{where}: {name} ", analytics_values.count, row.get(name))
