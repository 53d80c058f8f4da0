"""`GET /generation`: when a generation is answered, and with what.

OpenRouter answers 404 for a generation that exists but is too fresh (and, flakily, for the first GETs
of an id; for some records, the first GET even long after: they lag), so a poller must retry; tests also
script hostile field values for chosen ids to see what a client keeps. The record itself is
`generation_record`, written as the live API writes it by `live_shapes` unless `--shapes spec`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from typing import Any

from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.generation_record import generation_record
from openrouter_emulator.isotime import US_PER_SECOND, UTC
from openrouter_emulator.live_shapes import LIVE, live_generation
from openrouter_emulator.protocol import ApiError, Request, query_param
from openrouter_emulator.runtime_config import RuntimeConfig
from openrouter_emulator.stats import Stats
from openrouter_emulator.usage_day import parse_generation_id


class GenerationEndpoint:
    """The endpoint's state: GETs seen per id (for `generation_404_first` and `first_404_share`) and the
    scripted overrides."""

    def __init__(self, dataset: UsageDataset, config: RuntimeConfig, *, seed: int, stats: Stats) -> None:
        self._dataset = dataset
        self._config = config
        self._seed = seed
        self._stats = stats
        self._gets: dict[str, int] = {}
        self._lagged: set[str] = set()  # lagging ids whose first GET has been answered 404
        self._gets_lock = threading.Lock()  # `answer` runs in the pool when its day is not built yet
        self._overrides: dict[str, dict[str, Any]] = {}  # generation id -> fields answered instead

    def needs_pool(self, request: Request) -> bool:
        """Only the first request of a day builds it (numpy, maybe seconds): that one runs in the pool."""
        parsed = parse_generation_id(query_param(request.params, "id") or "")
        if parsed is None:
            return False
        date = dt.datetime.fromtimestamp(parsed[0], UTC).date()
        return self._dataset.built_day(date) is None and self._dataset.covers(date, time.time())

    def answer(self, request: Request, now: float) -> Any:
        gen_id = query_param(request.params, "id")
        if not gen_id:
            raise ApiError(400, "Missing required query parameter: id")
        first_404 = self._config.generation_404_first
        if first_404 > 0:
            with self._gets_lock:
                seen = self._gets[gen_id] = self._gets.get(gen_id, 0) + 1
            if seen <= first_404:
                raise ApiError(404, f"Generation {gen_id} not found")
        found = self._dataset.find(gen_id, now)
        if found is None:
            raise ApiError(404, f"Generation {gen_id} not found")
        day, row = found
        created_s = int(day.columns.created_us[row]) / US_PER_SECOND
        if day.columns.visible_at[row] > now or now - created_s < self._config.fresh_404_seconds:
            raise ApiError(404, f"Generation {gen_id} not found")
        if self._lags(gen_id):
            raise ApiError(404, f"Generation {gen_id} not found")
        record = generation_record(day, row)
        if self._config.shapes == LIVE:
            record = live_generation(record)
        record.update(self._overrides.get(gen_id, {}))
        return {"data": record}

    def lagging(self, gen_id: str) -> bool:
        """Whether the id is one of the `first_404_share` whose record lags: a draw from (seed, id) alone, so
        the same ids lag in every run and whatever order they are asked in."""
        share = self._config.first_404_share
        if share <= 0:
            return False
        digest = hashlib.sha256(f"{self._seed}:first-404:{gen_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < share * 2**64

    def _lags(self, gen_id: str) -> bool:
        """True, once, for the first answerable GET of a lagging id (it answers 404; later GETs the record)."""
        if not self.lagging(gen_id):
            return False
        with self._gets_lock:
            if gen_id in self._lagged:
                return False
            self._lagged.add(gen_id)
            self._stats.first_404s += 1
        return True

    def restart_counts(self) -> None:
        """Forget the GETs seen, so "the first N GETs" and "the first GET" count from now on (after
        `generation_404_first` or `first_404_share` changes)."""
        with self._gets_lock:
            self._gets.clear()
            self._lagged.clear()

    def override_records(self, request: Request, now: float) -> Any:
        """Hostile records: `{"overrides": {"<id>": {"<field>": <any JSON value>}}}` makes GET /generation
        answer those values for those fields (NaN and Infinity included), to test what the client keeps."""
        body = request.json()
        overrides = body.get("overrides") if isinstance(body, dict) else None
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ApiError(400, 'body must be {"overrides": {"<generation id>": {"<field>": value, ...}}}')
        for gen_id, values in overrides.items():
            self._overrides.setdefault(str(gen_id), {}).update(values)
        return {"records": len(self._overrides)}

    def clear_overrides(self) -> Any:
        self._overrides.clear()
        return {"records": 0}
