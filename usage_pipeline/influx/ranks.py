"""Which rank each generation's point takes, so that no two generations ever share a point.

Generations sharing (model, provider, µs) need distinct ranks (0..999, `points.point_time_ns`), and a rerun must
land each on the point it already has, so ranks are a pure function of the records and the points stored over
their time range (`place`): a stored id keeps its rank under the same key; a new id takes its key's smallest
free rank, in id order; an id stored under another key (its model or provider changed upstream) is placed
anew, named `moved`, and its old points handed back as stale, as are the extra points of an id stored twice.
A correct run meets neither. Whether a stale point is deleted is the writer's call (`upserts`): the server
may have no DELETE.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from usage_pipeline.influx.points import RANKS_PER_MICROSECOND, Key, identity_key
from usage_pipeline.openrouter.generation import Generation


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One point as InfluxDB holds it: whose it is, where, and the API key label it carries."""

    generation_id: str
    model: str
    provider: str | None  # None when the tag is absent
    time_ns: int
    api_key: str | None = None

    @property
    def key(self) -> Key:
        return self.model, self.provider or None, self.time_ns // 1000

    @property
    def rank(self) -> int:
        return self.time_ns % 1000


@dataclass
class Placement:
    ranks: dict[str, int] = field(default_factory=dict)  # generation id -> rank
    stale: list[StoredPoint] = field(default_factory=list)  # to delete before writing, where the server can
    moved: set[str] = field(default_factory=set)  # ids whose every stored point is under another key
    refused: dict[str, str] = field(default_factory=dict)  # generation id -> why it has no rank
    kept: int = 0  # ids rewritten onto the point they already had


def place(records: Sequence[Generation], stored: Iterable[StoredPoint]) -> Placement:
    """Ranks for `records` (one per id; a repeated id is placed once) given every point stored over their
    µs. Stored points of other ids keep their ranks untouched."""
    taken: dict[Key, set[int]] = {}
    held: dict[str, list[StoredPoint]] = {}
    for point in stored:
        taken.setdefault(point.key, set()).add(point.rank)
        held.setdefault(point.generation_id, []).append(point)
    placement = Placement()
    for record in sorted({r.id: r for r in records}.values(), key=lambda r: r.id):
        key = identity_key(record)
        own = held.get(record.id)
        if own:
            own.sort(key=lambda p: p.time_ns)
            kept = next((p for p in own if p.key == key), None)
            placement.stale.extend(p for p in own if p is not kept)
            if kept is not None:
                placement.ranks[record.id] = kept.rank
                placement.kept += 1
                continue
            placement.moved.add(record.id)
        ranks = taken.setdefault(key, set())
        rank = next((r for r in range(RANKS_PER_MICROSECOND) if r not in ranks), None) if ranks else 0
        if rank is None:
            model, provider, micros = key
            placement.refused[record.id] = (
                f"more than {RANKS_PER_MICROSECOND} generations share model={model!r} provider={provider!r} "
                f"µs={micros}: the timestamp has room for {RANKS_PER_MICROSECOND} per microsecond")
            continue
        ranks.add(rank)
        placement.ranks[record.id] = rank
    return placement
