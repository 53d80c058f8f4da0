"""One day's generations into the ledger as they stream in: points that never collide, reruns that fetch
only what is missing.

The capture calls `window_opened` (on its enumeration thread) for each window before fetching it: the
points InfluxDB holds in the window's time range seed the `RankBook`, and the ids stored whole are
returned, so they are not fetched again (unless `refresh`). `write` (on the caller's thread) places each
record in the book (its stored rank, or the smallest free one), deletes the points of records whose
identity changed, then upserts. `window_closed` forgets the window once all of it is written.

**A stored id is complete** (reused, not fetched) when, in the window's time range:
- exactly one point carries its `generation_id` (a duplicate, which no correct run leaves, is refetched, and
  the book then deletes the extra point);
- that point has what every parsed record must carry: the id, a `model` tag and a timestamp inside the day
  (created_at) — true of every point found there, since the ledger writes nothing without them;
- its `api_key` field equals the `api_key_id` label analytics answers for the id now (both absent counts as
  equal), so a key relabelled since the last run is fetched and rewritten.
A record whose other fields changed upstream after it was stored whole is not seen: `refresh` rewrites all.
A stored id whose record moved to another window's time range (its created_at changed) is not found there
and is fetched again; its old point in the other range is not deleted, and the zero-duplicate check
(points == distinct ids) reports it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from usage_pipeline.influx.points import identity_key, microseconds_since_epoch, unique_by_id
from usage_pipeline.influx.rank_book import RankBook, RankOverflowError, StoredPoint
from usage_pipeline.influx.reads import StoredIdentity
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.influx.writes import WRITE_BATCH_SIZE, WriteResult
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.windows import Window


@dataclass
class DayWriteTotals:
    """What the writer did over the day."""

    written: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # generation id -> why InfluxDB cannot hold it exactly
    stored_points_read: int = 0  # points found in the windows' ranges (what a rerun starts from)
    ranks_kept: int = 0  # records rewritten onto the point they already had
    stale_deleted: int = 0  # old points of records whose identity changed, deleted before the rewrite
    write_seconds: float = 0.0
    read_seconds: float = 0.0


def is_complete(stored: Sequence[StoredIdentity] | None, api_key_label: Any) -> bool:
    """Whether an id's stored points make it complete (see the module's definition)."""
    return stored is not None and len(stored) == 1 and stored[0].api_key == api_key_label


class DayWriter:
    """The ledger's `StoredRecords` for one capture, and the writer of its batches."""

    def __init__(self, store: InfluxStore, *, refresh: bool = False, batch_size: int = WRITE_BATCH_SIZE,
                 any_key: bool = False) -> None:
        self.store = store
        self.refresh = refresh
        self.any_key = any_key  # an id on one point is complete whatever its api_key (the push drain: the
        # nightly capture's analytics label is the authority, a pushed key name must not overwrite it)
        self.batch_size = batch_size
        self.totals = DayWriteTotals()
        self.book = RankBook()
        self._reader = InfluxStore(store.settings)  # the enumeration thread reads on a connection of its own
        self._lock = threading.Lock()  # the book is seeded on that thread and used on the caller's

    def __enter__(self) -> DayWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._reader.close()

    # ---- StoredRecords: called by the capture -----------------------------------------------------

    def window_opened(self, window: Window, ids: Mapping[str, Any]) -> set[str]:
        start_us, end_us = microseconds_since_epoch(window.start), microseconds_since_epoch(window.end)
        started = time.monotonic()
        found = self._reader.stored_identities(start_us * 1000, end_us * 1000)
        self.totals.read_seconds += time.monotonic() - started
        self.totals.stored_points_read += len(found)
        with self._lock:
            self.book.seed(start_us, end_us, (identity.point for identity in found))
        if self.refresh:
            return set()
        by_id: dict[str, list[StoredIdentity]] = defaultdict(list)
        for identity in found:
            by_id[identity.point.generation_id].append(identity)
        return {gen_id for gen_id, label in ids.items()
                if is_complete(by_id.get(gen_id), by_id[gen_id][0].api_key if self.any_key and gen_id in by_id
                               else label)}

    def window_closed(self, window: Window) -> None:
        with self._lock:
            self.book.release(microseconds_since_epoch(window.start), microseconds_since_epoch(window.end))

    # ---- the caller's batches ---------------------------------------------------------------------

    def write(self, generations: Sequence[Generation]) -> WriteResult:
        """Place, delete what became stale, upsert: what was written and what was refused by id."""
        started = time.monotonic()
        unique = unique_by_id(generations)
        ranks: dict[str, int] = {}
        stale: list[StoredPoint] = []
        refused: dict[str, str] = {}
        with self._lock:
            for generation in unique:
                key = identity_key(generation)
                if not self.book.covers(key[2]):  # outside every open window's range: read that µs first
                    self._seed_microsecond(key[2])
                try:
                    placement = self.book.place(generation.id, key)
                except RankOverflowError as exc:
                    refused[generation.id] = str(exc)
                    continue
                ranks[generation.id] = placement.rank
                stale.extend(placement.stale)
                self.totals.ranks_kept += placement.kept
        for point in stale:  # before the write: a freed rank may be taken by a record of this very batch
            self.store.delete_point(point.model, point.provider, point.time_ns)
        self.totals.stale_deleted += len(stale)
        result = self.store.write_generations([g for g in unique if g.id in ranks], self.batch_size, ranks)
        result.refused.update(refused)
        self.totals.written += result.written
        self.totals.refused.update(result.refused)
        self.totals.write_seconds += time.monotonic() - started
        return result

    def _seed_microsecond(self, micros: int) -> None:
        found = self.store.stored_identities(micros * 1000, micros * 1000 + 1000)
        self.book.seed(micros, micros + 1, (identity.point for identity in found))
