"""`ranks.place`, the one function that keeps every generation on a point of its own, held by properties."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_pipeline.influx.points import RANKS_PER_MICROSECOND, identity_key, point_time_ns
from usage_pipeline.influx.ranks import Placement, StoredPoint, place
from usage_pipeline.openrouter.generation import Generation

pytestmark = pytest.mark.pure

START = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
MODELS = ["m/a", "m/b"]
PROVIDERS: list[str | None] = ["P", None]


def generation(gen_id: str, micros: int, model: str, provider: str | None) -> Generation:
    fields = dict.fromkeys(Generation.__dataclass_fields__)
    fields.update(id=gen_id, created_at=START + dt.timedelta(microseconds=micros), model=model,
                  provider_name=provider)
    return Generation(**fields)  # type: ignore[arg-type]


# Few ids, models, providers and µs, so that keys collide and ids recur between the stored and the new.
records_strategy = st.lists(
    st.builds(generation, st.sampled_from([f"g{n}" for n in range(12)]), st.integers(0, 3),
              st.sampled_from(MODELS), st.sampled_from(PROVIDERS)),
    max_size=20, unique_by=lambda g: g.id)  # a fetched set holds each id once


def written(records: list[Generation], placement: Placement, stored: list[StoredPoint]) -> list[StoredPoint]:
    """What the database holds after the writer acted on `placement`: stale points deleted, records upserted."""
    stale = set(placement.stale)
    by_point = {(p.model, p.provider, p.time_ns): p for p in stored if p not in stale}
    for record in {r.id: r for r in records}.values():
        if record.id in placement.ranks:
            model, provider, _ = identity_key(record)
            time_ns = point_time_ns(record.created_at, placement.ranks[record.id])
            by_point[(model, provider, time_ns)] = StoredPoint(record.id, model, provider, time_ns)
    return list(by_point.values())


@settings(max_examples=200, deadline=None)
@given(earlier=records_strategy, later=records_strategy, shuffle=st.randoms(use_true_random=False))
def test_no_two_generations_ever_share_a_point_and_reruns_land_on_the_same_points(
        earlier: list[Generation], later: list[Generation], shuffle: random.Random) -> None:
    stored = written(earlier, place(earlier, []), [])
    placement = place(later, stored)
    after = written(later, placement, stored)

    # One point per id, and every id placed or refused: nothing overwritten, nothing lost.
    ids = [p.generation_id for p in after]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r.id for r in earlier} | {r.id for r in later} - set(placement.refused)
    # A record already stored under its key keeps the stored rank; its points under other keys are stale.
    held = {p.generation_id: p for p in stored}
    for record in {r.id: r for r in later}.values():
        old = held.get(record.id)
        if old is not None and old.key == identity_key(record):
            assert placement.ranks[record.id] == old.rank
        elif old is not None:
            assert old in placement.stale
    assert all(p.generation_id in {r.id for r in later} for p in placement.stale)
    # The same records in any order get the same ranks; placed again over what was written, nothing moves.
    shuffled = list(later)
    shuffle.shuffle(shuffled)
    assert place(shuffled, stored).ranks == placement.ranks
    again = place(later, after)
    assert again.ranks == placement.ranks and not again.stale and again.kept == len(placement.ranks)


def test_a_microsecond_over_its_ranks_refuses_the_last_by_id() -> None:
    crowd = [generation(f"g{n:04d}", 0, "m/a", None) for n in range(RANKS_PER_MICROSECOND + 1)]
    placement = place(crowd, [])
    assert sorted(placement.ranks.values()) == list(range(RANKS_PER_MICROSECOND))
    assert list(placement.refused) == [f"g{RANKS_PER_MICROSECOND:04d}"]
    assert "more than 1000 generations share model='m/a' provider=None" in placement.refused["g1000"]


def test_a_duplicate_left_by_an_earlier_fault_is_handed_back_as_stale() -> None:
    record = generation("g1", 5, "m/a", "P")
    time_ns = point_time_ns(record.created_at, 0)
    stored = [StoredPoint("g1", "m/a", "P", time_ns), StoredPoint("g1", "m/a", "P", time_ns + 1),
              StoredPoint("g2", "m/a", "P", time_ns + 2)]
    placement = place([record], stored)
    assert placement.ranks == {"g1": 0} and placement.stale == [stored[1]] and placement.kept == 1
