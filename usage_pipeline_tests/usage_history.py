"""A published DuckDB file of realistic usage, for the report's tests and its README picture.

Both kinds of day go through the pipeline's own write paths. Captured days: the emulator's synthetic
generations of a day as the ledger frame InfluxDB hands back, `summarize_day`, `replace_day`. Days before
the ledger: the same generations summed per model label and per API key label, as OpenRouter's analytics
answers them, stored by the history backfill's `usage_pipeline.duck.history.write_history` (with
`model_names` from the emulator's models). Then one `publish`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from openrouter_emulator.dataset import API_KEYS, BYOK, CANCELLED, ENDPOINTS, EXTERNAL_USERS, MODELS, UsageDataset
from usage_pipeline.budgets import Budgets
from usage_pipeline.duck import CaptureStatus, publish, replace_day, store_path_for, summarize_day
from usage_pipeline.duck.history import write_history as store_history
from usage_pipeline.duck.today import hourly_rows, replace_open_days
from usage_pipeline.openrouter.history import AggregateRow, HistoryRead
from usage_pipeline.openrouter.model_names import ModelName


def usage_dataset(days: list[dt.date], generations_per_day: int, seed: int = 7) -> UsageDataset:
    """The emulator's organisation, covering every day asked for (it only answers recent days)."""
    oldest = min(days)
    today = dt.datetime.now(dt.UTC).date()
    return UsageDataset(seed=seed, generations_per_day=generations_per_day, days=max(1, (today - oldest).days))


def ledger_frame(dataset: UsageDataset, day: dt.date) -> pd.DataFrame:
    """The day's generations as InfluxDB returns the ledger: one row per point, the stored field names."""
    usage_day = dataset.day(day, time.time())
    assert usage_day is not None, f"the emulator's dataset does not cover {day}"
    c = usage_day.columns
    rows = np.arange(len(c.created_us))
    users = np.array([*EXTERNAL_USERS, None], dtype=object)  # code -1 picks the trailing None
    return pd.DataFrame({
        "time": c.created_us * 1000,
        "generation_id": usage_day.generation_ids(rows),
        "model": [MODELS[m].slug for m in c.model],
        "provider": [ENDPOINTS[e].provider for e in c.endpoint],
        "api_key": [API_KEYS[k].label for k in c.api_key],
        "external_user": users[c.external_user],
        "total_cost": c.usage, "usage": c.usage,
        "latency": c.latency_ms.astype(float), "generation_time": c.generation_ms.astype(float),
        "tokens_prompt": c.tokens_prompt.astype("int64"), "tokens_completion": c.tokens_completion.astype("int64"),
        "native_tokens_reasoning": c.tokens_reasoning.astype("int64"),
        "native_tokens_cached": c.tokens_cached.astype("int64"),
        "is_byok": (c.flags & BYOK) > 0, "cancelled": (c.flags & CANCELLED) > 0,
    })


def write_usage_file(published: Path, *, exact_days: list[dt.date], aggregate_days: list[dt.date],
                  generations_per_day: int | Callable[[dt.date], int] = 2000, seed: int = 7,
                  org: str = "default", budgets: Budgets | None = None) -> None:
    """Write organisation `org`'s `exact_days` through the pipeline and `aggregate_days` as analytics
    aggregates, then publish (into the same store: another organisation's rows stay).

    `generations_per_day` may vary by day (a function of the day), e.g. quieter weekends; `budgets` are the
    organisation's (daily_budgets).
    """
    frame_of = _ledger_frames([*exact_days, *aggregate_days], generations_per_day, seed)
    store = store_path_for(published)
    published.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(store)) as conn:
        for day in exact_days:
            frame = frame_of(day)
            capture = CaptureStatus(api_requests=len(frame), api_cost=float(frame["usage"].sum()), status="complete")
            replace_day(conn, summarize_day(day, [frame], capture, org=org, budgets=budgets))
        if aggregate_days:
            _write_aggregates(conn, aggregate_days, frame_of, org)
        publish(conn, published)


def write_today(published: Path, *, generations_per_day: int = 2000, seed: int = 7, org: str = "default",
                now: dt.datetime | None = None) -> None:
    """Store today's hours so far in `usage_today` as the `usage_today` job does (`hourly_rows` over the
    ledger, `replace_open_days`), then publish. Models are the dated permaslugs `GET /generation` sends on
    the live API, so a reader must map them to labels through `model_names`."""
    now = now or dt.datetime.now(dt.UTC)
    today = now.date()
    permaslug = {m.slug: m.permaslug for m in MODELS}
    frame = ledger_frame(usage_dataset([today], generations_per_day, seed), today)
    frame = frame[frame["time"] <= int(now.timestamp() * 1e9)].assign(model=lambda f: f["model"].map(permaslug))
    rows = hourly_rows([today], lambda day: [frame], now.replace(tzinfo=None), org)
    with duckdb.connect(str(store_path_for(published))) as conn:
        replace_open_days(conn, rows)
        publish(conn, published)


def _ledger_frames(days: list[dt.date], generations_per_day: int | Callable[[dt.date], int],
                   seed: int) -> Callable[[dt.date], pd.DataFrame]:
    """A day's ledger frame, from one emulator dataset per day size."""
    def count(day: dt.date) -> int:
        return generations_per_day(day) if callable(generations_per_day) else generations_per_day

    datasets = {n: usage_dataset(days, n, seed) for n in {count(day) for day in days}}
    return lambda day: ledger_frame(datasets[count(day)], day)


def _write_aggregates(conn: duckdb.DuckDBPyConnection, days: list[dt.date],
                      frame_of: Callable[[dt.date], pd.DataFrame], org: str) -> None:
    """Store the days as the history backfill does: analytics rows per model label and per key label."""
    label = {m.slug: m.name for m in MODELS}
    read = HistoryRead(sorted(days))
    for day in read.days:
        frame = frame_of(day).assign(model_label=lambda f: f["model"].map(label))
        for column, rows in (("model_label", read.by_model), ("api_key", read.by_api_key)):
            for name, group in frame.groupby(column):
                rows.append(AggregateRow(
                    day=day, label=str(name), requests=len(group), usage=float(group["usage"].sum()),
                    tokens_prompt=int(group["tokens_prompt"].sum()),
                    tokens_completion=int(group["tokens_completion"].sum()),
                    tokens_reasoning=int(group["native_tokens_reasoning"].sum()),
                    tokens_cached=int(group["native_tokens_cached"].sum())))
    names = [ModelName(slug=m.slug, permaslug=m.permaslug, name=m.name) for m in MODELS]
    store_history(conn, read, names, org)
