"""Aggregate-only history: a year of daily usage that exists only as analytics cells, never as generations.

OpenRouter answers model, api_key_id, user, workspace and app at day granularity for 365 days, while
generation-level dimensions stop at 31 days. Days older than both the emulated generation days and that
31-day window carry cells instead: one per (model, API key, app attribution) with the day's request
count and sums, drawn from (seed, date) alone. Building a cell day costs microseconds, so a 365-day
query never builds a single generation.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from openrouter_emulator.isotime import US_PER_DAY, day_start_us, utc_today
from openrouter_emulator.organisation import API_KEYS, MODELS

GENERATION_WINDOW_DAYS = 31  # generation-level analytics dimensions reach this far back
MAX_HISTORY_DAYS = 365  # analytics answers at most this many completed days back
_HISTORY_STREAM = 3  # rng stream [seed, ordinal, 3]; 0-2 are the generation days' streams

# Each cell: (model, key, app attribution) with app = the key's app or -1 (no attribution).
_CELL_MODEL, _CELL_KEY, _CELL_APP = (np.array(v, dtype=np.int64) for v in zip(*[
    (m, k, app) for m in range(len(MODELS)) for k, key in enumerate(API_KEYS)
    for app in ((key.app, -1) if key.app >= 0 else (-1,))], strict=True))
_CELL_SHARE = np.array([
    MODELS[m].share * API_KEYS[k].share
    * (1.0 if API_KEYS[k].app < 0 else API_KEYS[k].app_share if a >= 0 else 1.0 - API_KEYS[k].app_share)
    for m, k, a in zip(_CELL_MODEL.tolist(), _CELL_KEY.tolist(), _CELL_APP.tolist(), strict=True)])
_CELL_SHARE /= _CELL_SHARE.sum()


def _per_model(attribute: str) -> np.ndarray:
    return np.array([float(getattr(m, attribute)) for m in MODELS])[_CELL_MODEL]


# Mean tokens and latency per request of each cell's model (lognormal means of the generation days' draws).
_PROMPT = _per_model("prompt_median") * np.exp(0.5)
_VISIBLE = _per_model("completion_median") * np.exp(0.405)
_REASONING = _per_model("reasoning") * 700.0 * np.exp(0.32)
_CACHED_SHARE = _per_model("caching") * 0.4 * 0.625
_PRICE_IN = _per_model("prompt_usd_per_mtok") / 1e6
_PRICE_OUT = _per_model("completion_usd_per_mtok") / 1e6
_LATENCY = _per_model("ttft_ms") * np.exp(0.125)


@dataclass(frozen=True, slots=True)
class Cells:
    """Aggregate cells, one row each; `day_us` is the cell's UTC day start (its time for bucketing)."""

    day_us: np.ndarray  # int64
    model: np.ndarray  # int64 index into MODELS
    api_key: np.ndarray  # int64 index into API_KEYS
    app: np.ndarray  # int64 index into APPS or -1
    requests: np.ndarray  # int64
    usage: np.ndarray  # float64 USD
    tokens_prompt: np.ndarray  # int64
    tokens_completion: np.ndarray  # int64 (includes reasoning)
    tokens_reasoning: np.ndarray  # int64
    tokens_cached: np.ndarray  # int64
    byok: np.ndarray  # int64 BYOK request count
    latency_sum: np.ndarray  # float64 ms

    def __len__(self) -> int:
        return len(self.day_us)

    def take(self, index: np.ndarray) -> Cells:
        return Cells(*(getattr(self, f.name)[index] for f in fields(self)))

    @staticmethod
    def concat(parts: list[Cells]) -> Cells:
        if not parts:
            return Cells(*(np.zeros(0, dtype=np.float64 if f.name in ("usage", "latency_sum") else np.int64)
                           for f in fields(Cells)))
        return Cells(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Cells)))


def _volume(rng: np.random.Generator, date: dt.date, generations_per_day: int) -> int:
    """A day's requests: around generations_per_day, with a gentle yearly wave and quieter weekends.

    The wave follows the calendar, not "now", so a day's figures never change as time passes.
    """
    season = 1.0 + 0.2 * np.sin(2 * np.pi * date.toordinal() / 365.25)
    weekly = 0.55 if date.weekday() >= 5 else 1.0
    return int(rng.poisson(generations_per_day * season * weekly * rng.lognormal(0.0, 0.12)))


def build_cells(seed: int, date: dt.date, generations_per_day: int) -> Cells:
    """The day's cells from (seed, date) alone; cells without requests are left out."""
    rng = np.random.default_rng([seed, date.toordinal(), _HISTORY_STREAM])
    requests = rng.multinomial(_volume(rng, date, generations_per_day), _CELL_SHARE)
    noise = rng.lognormal(0.0, 0.08, size=(4, len(requests)))
    prompt = np.rint(requests * _PROMPT * noise[0]).astype(np.int64)
    reasoning = np.rint(requests * _REASONING * noise[1]).astype(np.int64)
    completion = np.rint(requests * _VISIBLE * noise[2]).astype(np.int64) + reasoning
    cached = np.rint(prompt * _CACHED_SHARE * noise[3]).astype(np.int64)
    byok = rng.binomial(requests, 0.03)
    provider_cost = (prompt - cached) * _PRICE_IN + cached * _PRICE_IN * 0.25 + completion * _PRICE_OUT
    byok_share = byok / np.maximum(requests, 1)
    usage = np.round(provider_cost * (1.0 - 0.95 * byok_share), 9)
    latency = np.round(requests * _LATENCY * rng.lognormal(0.0, 0.05, len(requests)), 3)
    keep = np.flatnonzero(requests)
    day = np.full(len(requests), day_start_us(date), dtype=np.int64)
    return Cells(day, _CELL_MODEL, _CELL_KEY, _CELL_APP, requests.astype(np.int64), usage, prompt, completion,
                 reasoning, cached, byok.astype(np.int64), latency).take(keep)


class History:
    """The aggregate-only days: from `history_days` back up to the newest day older than both the
    generation days and the 31-day window, so no day is ever both a generation day and a history day."""

    def __init__(self, *, seed: int, generations_per_day: int, generation_days: int) -> None:
        self.seed = seed
        self.generations_per_day = generations_per_day
        self.generation_days = generation_days
        self._cells: dict[dt.date, Cells] = {}
        self._lock = threading.Lock()

    def span(self, now: float, history_days: int) -> tuple[dt.date, dt.date] | None:
        """(oldest, newest) history day now, or None when there is none."""
        today = utc_today(now)
        oldest = today - dt.timedelta(days=min(history_days, MAX_HISTORY_DAYS))
        newest = today - dt.timedelta(days=max(self.generation_days, GENERATION_WINDOW_DAYS) + 1)
        return (oldest, newest) if oldest <= newest else None

    def covers(self, date: dt.date, now: float, history_days: int) -> bool:
        span = self.span(now, history_days)
        return span is not None and span[0] <= date <= span[1]

    def day(self, date: dt.date) -> Cells:
        cells = self._cells.get(date)
        if cells is None:
            with self._lock:
                cells = self._cells.setdefault(date, build_cells(self.seed, date, self.generations_per_day))
        return cells

    def cells(self, start_us: int, end_us: int, now: float, history_days: int, inclusive_end: bool = False) -> Cells:
        """The cells whose day start lies in [start_us, end_us) (or [start_us, end_us]), oldest first."""
        span = self.span(now, history_days)
        if span is None:
            return Cells.concat([])
        first = max(span[0], dt.date(1970, 1, 1) + dt.timedelta(days=-(-start_us // US_PER_DAY)))
        parts = []
        date = first
        while date <= span[1]:
            begins = day_start_us(date)
            if begins > end_us or (begins == end_us and not inclusive_end):
                break
            parts.append(self.day(date))
            date += dt.timedelta(days=1)
        return Cells.concat(parts)

    def truth(self, date: dt.date) -> dict[str, Any]:
        """The day's figures as analytics shows them: models by slug and by label, keys by label."""
        c = self.day(date)
        models = np.bincount(c.model, weights=c.requests, minlength=len(MODELS)).astype(np.int64)
        costs = np.bincount(c.model, weights=c.usage, minlength=len(MODELS))
        keys = np.bincount(c.api_key, weights=c.requests, minlength=len(API_KEYS)).astype(np.int64)
        return {
            "date": date.isoformat(), "aggregate_only": True, "count": int(c.requests.sum()), "ids": [],
            "cost": float(c.usage.sum()),
            "tokens_prompt": int(c.tokens_prompt.sum()), "tokens_completion": int(c.tokens_completion.sum()),
            "tokens_reasoning": int(c.tokens_reasoning.sum()), "tokens_cached": int(c.tokens_cached.sum()),
            "by_model": {MODELS[m].slug: int(models[m]) for m in range(len(MODELS)) if models[m]},
            "by_model_permaslug": {MODELS[m].permaslug: int(models[m]) for m in range(len(MODELS)) if models[m]},
            "by_model_label": {MODELS[m].name: int(models[m]) for m in range(len(MODELS)) if models[m]},
            "by_model_cost": {MODELS[m].slug: float(costs[m]) for m in range(len(MODELS)) if models[m]},
            "by_api_key": {API_KEYS[k].label: int(keys[k]) for k in range(len(API_KEYS)) if keys[k]},
        }
