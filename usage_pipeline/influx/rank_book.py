"""Which rank each generation's point takes, so that no two generations ever share a point.

A point's identity is measurement + tags (model, provider) + timestamp, and the timestamp is created_at's µs
plus a rank 0..999 (`points.point_time_ns`). Generations sharing (model, provider, µs) need distinct ranks.
Ranking within one batch by id order worked while a window was written whole; with records streamed in
batches, two generations of one µs can arrive in different batches, and both would take rank 0: the second
would overwrite the first. So the ranks of a time range are kept in a book, seeded with the points InfluxDB
already holds there:

- an id already stored under the same key keeps its stored rank (stable across reruns: a rewrite is an
  upsert of the same point);
- a new id takes the smallest rank its key has free;
- an id stored under another key (its record changed since) gets a rank under its new key, and its old
  points are handed back as stale, for the writer to delete before it writes, so none remains. An id stored
  twice (a duplicate some earlier fault left) keeps the point matching its key and the rest are stale too.

The book only answers for µs it `covers` (seeded ranges); the writer seeds a range from InfluxDB before
placing anything in it and `release`s it once every record placed there is written, so memory follows the
open windows, not the day. Pure: no I/O; tested alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RANKS_PER_MICROSECOND = 1000

Key = tuple[str, str | None, int]  # model, provider tag (None when absent), created_at in µs since the epoch


class RankOverflowError(ValueError):
    """More generations share one (model, provider, µs) than the timestamp has ranks for."""


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One point as InfluxDB holds it: whose it is and where."""

    generation_id: str
    model: str
    provider: str | None  # None when the tag is absent
    time_ns: int

    @property
    def key(self) -> Key:
        return (self.model, self.provider or None, self.time_ns // 1000)

    @property
    def rank(self) -> int:
        return self.time_ns % 1000


@dataclass(frozen=True, slots=True)
class Placement:
    rank: int
    stale: tuple[StoredPoint, ...] = ()  # the id's other points, to delete before the new one is written
    kept: bool = False  # the id was stored under this key already: same rank, same point


def _point(gen_id: str, key: Key, rank: int) -> StoredPoint:
    model, provider, micros = key
    return StoredPoint(gen_id, model, provider, micros * 1000 + rank)


class RankBook:
    """The ranks of the covered µs ranges: key -> {rank: id}, and id -> its points there."""

    def __init__(self) -> None:
        self._ranks: dict[Key, dict[int, str]] = {}
        self._points: dict[str, list[tuple[Key, int]]] = {}
        self._ranges: list[tuple[int, int]] = []  # [start, end) in µs, seeded and not yet released

    def __len__(self) -> int:
        return len(self._points)

    def covers(self, micros: int) -> bool:
        return any(start <= micros < end for start, end in self._ranges)

    def seed(self, start_us: int, end_us: int, points: Iterable[StoredPoint]) -> None:
        """Cover [start_us, end_us) with the points stored there. µs already covered keep what the book says
        (it is newer than any read); points outside the range are ignored."""
        already = [r for r in self._ranges if r[0] < end_us and start_us < r[1]]
        for point in points:
            micros = point.time_ns // 1000
            if not start_us <= micros < end_us or any(a <= micros < b for a, b in already):
                continue
            key, rank = point.key, point.rank
            taken = self._ranks.setdefault(key, {})
            if taken.get(rank, point.generation_id) != point.generation_id:
                raise ValueError(f"two stored points claim rank {rank} of {key}")  # one point holds one id
            taken[rank] = point.generation_id
            held = self._points.setdefault(point.generation_id, [])
            if (key, rank) not in held:
                held.append((key, rank))
        self._ranges.append((start_us, end_us))

    def place(self, gen_id: str, key: Key) -> Placement:
        """The rank `gen_id` takes under `key` (whose µs must be covered), and its stale points."""
        if not self.covers(key[2]):
            raise ValueError(f"the rank book does not cover µs {key[2]}: seed its range first")
        held = self._points.get(gen_id, [])
        kept = next((rank for k, rank in held if k == key), None)
        stale = tuple(_point(gen_id, k, rank) for k, rank in held if (k, rank) != (key, kept))
        taken = self._ranks.setdefault(key, {})
        if kept is None:
            rank = next((r for r in range(RANKS_PER_MICROSECOND) if r not in taken), None)
            if rank is None:
                model, provider, micros = key
                raise RankOverflowError(
                    f"more than {RANKS_PER_MICROSECOND} generations share model={model!r} provider={provider!r} "
                    f"µs={micros}: the timestamp has room for {RANKS_PER_MICROSECOND} per microsecond")
        else:
            rank = kept
        for point in stale:  # their points are deleted before this one is written: the ranks are free
            old = self._ranks.get(point.key)
            if old is not None and old.get(point.rank) == gen_id:
                del old[point.rank]
                if not old:
                    del self._ranks[point.key]
        taken[rank] = gen_id
        self._ranks[key] = taken
        self._points[gen_id] = [(key, rank)]
        return Placement(rank, stale, kept is not None)

    def points_of(self, gen_id: str) -> list[StoredPoint]:
        """The points the book holds for `gen_id` (stored or placed)."""
        return [_point(gen_id, key, rank) for key, rank in self._points.get(gen_id, [])]

    def release(self, start_us: int, end_us: int) -> None:
        """Forget [start_us, end_us): everything placed there is written. Covered ranges inside it go too."""
        self._ranges = [r for r in self._ranges if not (start_us <= r[0] and r[1] <= end_us)]
        for key in [k for k in self._ranks if start_us <= k[2] < end_us and not self.covers(k[2])]:
            for gen_id in self._ranks.pop(key).values():
                held = [(k, r) for k, r in self._points.get(gen_id, []) if k != key]
                if held:
                    self._points[gen_id] = held
                else:
                    self._points.pop(gen_id, None)
