"""Deterministic synthetic OpenRouter usage of one organisation, built lazily per UTC day.

A day is generated from (seed, date) alone, never from "now", so every process with the same seed sees
the same generations. What is visible depends on time: today's traffic appears as its timestamps pass,
late arrivals appear when they are released. The organisation is `organisation`, a day's rows are
`columns`, a day's snapshot `usage_day`, and one record as `GET /generation` answers it is
`generation_record` (re-exported here for older callers, which is why this imports it).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import numpy as np

from openrouter_emulator.columns import BYOK, CANCELLED, LATE, DayColumns, generate_columns
from openrouter_emulator.generation_record import generation_record
from openrouter_emulator.isotime import EPOCH, US_PER_DAY, US_PER_MS, US_PER_SECOND, UTC, day_start_us, utc_today
from openrouter_emulator.organisation import (
    API_KEYS,
    APPS,
    ENDPOINT_PROVIDER,
    ENDPOINTS,
    EXTERNAL_USERS,
    FINISH_REASONS,
    MEMBERS,
    MODELS,
    PROVIDERS,
    WORKSPACES,
    Model,
)
from openrouter_emulator.usage_day import UsageDay, parse_generation_id

# What this module offered before the organisation, the columns and the record had modules of their own:
# the pipeline's tests (and older callers) still import these names from here.
__all__ = [
    "API_KEYS", "APPS", "BYOK", "CANCELLED", "ENDPOINT_PROVIDER", "ENDPOINTS", "EPOCH", "EXTERNAL_USERS",
    "FINISH_REASONS", "MEMBERS", "MODELS", "PROVIDERS", "US_PER_DAY", "US_PER_SECOND", "UTC", "WORKSPACES",
    "DayColumns", "Model", "UsageDataset", "UsageDay", "day_start_us", "generation_record", "parse_generation_id",
    "utc_today",
]


class UsageDataset:
    """The organisation's generations for `days` completed UTC days plus today, built on first use."""

    def __init__(self, *, seed: int, generations_per_day: int, days: int, late_generations: int = 0,
                 late_visible_at: float = 0.0) -> None:
        self.seed = seed
        self.generations_per_day = generations_per_day
        self.days = days
        self.late_generations = late_generations
        self.late_visible_at = late_visible_at
        self._days: dict[dt.date, UsageDay] = {}
        self._batches: dict[dt.date, int] = {}
        self._lock = threading.Lock()

    def dates(self, now: float) -> list[dt.date]:
        today = utc_today(now)
        return [today - dt.timedelta(days=k) for k in range(self.days, -1, -1)]

    def covers(self, date: dt.date, now: float) -> bool:
        today = utc_today(now)
        return today - dt.timedelta(days=self.days) <= date <= today

    def built_day(self, date: dt.date) -> UsageDay | None:
        """The day's snapshot if something already needed it; never builds (cheap endpoints use it)."""
        return self._days.get(date)

    def day(self, date: dt.date, now: float) -> UsageDay | None:
        """The day's snapshot, or None when the organisation has no traffic that day."""
        if not self.covers(date, now):
            return None
        built = self._days.get(date)
        if built is not None:
            return built
        with self._lock:
            if date not in self._days:
                self._days[date] = UsageDay(date, self._build(date, now))
            return self._days[date]

    def _build(self, date: dt.date, now: float) -> DayColumns:
        ordinal = date.toordinal()
        start = day_start_us(date)
        rng = np.random.default_rng([self.seed, ordinal])
        columns = generate_columns(rng, self.generations_per_day, start, US_PER_DAY, bursty=True, twins=True,
                                   visible_at=None)
        if self.late_generations > 0 and date < utc_today(now):
            late_rng = np.random.default_rng([self.seed, ordinal, 1])
            late = generate_columns(late_rng, self.late_generations, start, US_PER_DAY, bursty=False, twins=False,
                                    visible_at=self.late_visible_at)
            late.flags[:] |= LATE
            late.visible_at[:] = np.maximum(late.visible_at, late.created_us / US_PER_SECOND)
            columns = columns.concat(late)
        return columns

    def add_generations(self, date: dt.date, count: int, now: float, at_us: int | None = None) -> list[str]:
        """Late arrivals for `date`, visible from `now`; ids depend on (seed, date, batch number) only.

        `at_us` puts all of them at one instant (a burst), to test what no window can split; it is truncated
        to the millisecond, as every created time is (`columns.whole_ms`).
        """
        day = self.day(date, now)
        if day is None:
            raise ValueError(f"{date} is outside the emulated days")
        start = day_start_us(date)
        span = min(US_PER_DAY, int(now * US_PER_SECOND) - start)
        if span <= 0 or count <= 0:
            raise ValueError("count must be positive and the date must have begun")
        with self._lock:
            batch = self._batches.get(date, 0) + 1
            self._batches[date] = batch
            rng = np.random.default_rng([self.seed, date.toordinal(), 2, batch])
            added = generate_columns(rng, count, start, span, bursty=False, twins=False, visible_at=now)
            if at_us is not None:
                if not start <= at_us < start + span:
                    raise ValueError(f"'at' must lie inside {date} and before now")
                added.created_us[:] = at_us - at_us % US_PER_MS
            added.flags[:] |= LATE
            current = self._days[date]
            self._days[date] = UsageDay(date, current.columns.concat(added))
        return sorted(UsageDay(date, added).generation_ids(np.arange(count)))

    def find(self, gen_id: str, now: float) -> tuple[UsageDay, int] | None:
        """The generation's day and row, whether or not it is visible yet."""
        parsed = parse_generation_id(gen_id)
        if parsed is None:
            return None
        seconds, suffix = parsed
        day = self.day(dt.datetime.fromtimestamp(seconds, UTC).date(), now)
        if day is None:
            return None
        row = day.locate(seconds, suffix)
        return None if row is None else (day, row)

    def truth(self, date: dt.date, now: float) -> dict[str, Any]:
        """The ground truth of one UTC day as the API would show it now (models by slug, and by the permaslug
        live `GET /generation` answers as `model`; keys by label).

        `models` and `api_keys` name every model and key each way the API does, a bridge the real API
        does not offer in one place (tests use it to check label-named analytics against the truth).
        """
        catalogue = {
            "models": [{"slug": m.slug, "permaslug": m.permaslug, "label": m.name} for m in MODELS],
            "api_keys": [{"numeric_id": k.numeric_id, "hash": k.hash, "label": k.label} for k in API_KEYS],
        }
        day = self.day(date, now)
        if day is None:
            return {"date": date.isoformat(), "count": 0, "ids": [], "by_model": {}, "by_model_permaslug": {},
                    "cost": 0.0,
                    "by_model_cost": {}, "by_api_key": {}, **catalogue}
        rows = np.flatnonzero(day.visible(now))
        c = day.columns
        model = c.model[rows]
        counts = np.bincount(model, minlength=len(MODELS))
        costs = np.bincount(model, weights=c.usage[rows], minlength=len(MODELS))
        keys = np.bincount(c.api_key[rows], minlength=len(API_KEYS))
        return {
            "date": date.isoformat(),
            "count": int(len(rows)),
            "ids": sorted(day.generation_ids(rows)),
            "by_model": {MODELS[m].slug: int(counts[m]) for m in range(len(MODELS)) if counts[m]},
            "by_model_permaslug": {MODELS[m].permaslug: int(counts[m]) for m in range(len(MODELS)) if counts[m]},
            "cost": float(c.usage[rows].sum()),
            "by_model_cost": {MODELS[m].slug: float(costs[m]) for m in range(len(MODELS)) if counts[m]},
            "by_api_key": {API_KEYS[k].label: int(keys[k]) for k in range(len(API_KEYS)) if keys[k]},
            **catalogue,
        }
