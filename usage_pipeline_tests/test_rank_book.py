"""The rank book alone (pure): stable ranks across batches and reruns, stale points handed back, and a model
of InfluxDB's overwrite semantics in which no sequence of batches, reruns or changed records ever makes two
generations share a point."""

from __future__ import annotations

import random

import pytest

from usage_pipeline.influx.rank_book import Key, RankBook, RankOverflowError, StoredPoint

US = 1_700_000_000_000_000  # some µs since the epoch
A: Key = ("openai/gpt-4o", "OpenAI", US)
B: Key = ("openai/gpt-4o", None, US)  # same µs and model, no provider tag: another key


def book_over(start: int = US - 10, end: int = US + 10, points: list[StoredPoint] | None = None) -> RankBook:
    book = RankBook()
    book.seed(start, end, points or [])
    return book


def stored(gen_id: str, key: Key, rank: int) -> StoredPoint:
    return StoredPoint(gen_id, key[0], key[1], key[2] * 1000 + rank)


def test_generations_of_one_key_arriving_in_different_batches_take_different_ranks() -> None:
    book = book_over()
    assert book.place("gen-f", A).rank == 0  # the first batch held only gen-f ...
    assert book.place("gen-b", A).rank == 1  # ... a later one gen-b: ranking each batch alone gave both 0
    assert book.place("gen-x", B).rank == 0  # another tag set is another key
    assert book.place("gen-f", A).rank == 0 and book.place("gen-f", A).kept  # a rewrite is the same point


def test_stored_ids_keep_their_ranks_and_new_ones_take_the_smallest_free() -> None:
    book = book_over(points=[stored("gen-d", A, 0), stored("gen-b", A, 2)])
    assert book.place("gen-b", A).rank == 2 and book.place("gen-d", A).rank == 0  # stable across reruns
    assert book.place("gen-a", A).rank == 1  # sorts first, but takes the hole: nothing else moves
    assert book.place("gen-z", A).rank == 3


def test_a_record_whose_identity_changed_hands_back_its_old_point_and_frees_the_rank() -> None:
    book = book_over(points=[stored("gen-1", A, 0), stored("gen-2", A, 1)])
    moved = book.place("gen-1", B)  # its provider is known now: another tag set
    assert moved.rank == 0 and not moved.kept
    assert moved.stale == (stored("gen-1", A, 0),)
    assert book.place("gen-3", A).rank == 0  # the freed rank (written after the stale point is deleted)
    assert book.points_of("gen-1") == [stored("gen-1", B, 0)]


def test_a_stored_duplicate_keeps_the_point_matching_the_record_and_the_rest_are_stale() -> None:
    book = book_over(points=[stored("gen-1", A, 0), stored("gen-1", A, 4), stored("gen-1", B, 0)])
    placed = book.place("gen-1", A)
    assert placed.rank == 0 and placed.kept
    assert set(placed.stale) == {stored("gen-1", A, 4), stored("gen-1", B, 0)}


def test_a_thousand_and_first_generation_of_one_microsecond_is_refused() -> None:
    book = book_over()
    assert [book.place(f"g{i:04d}", A).rank for i in range(1000)] == list(range(1000))
    with pytest.raises(RankOverflowError, match="more than 1000 generations share"):
        book.place("g1000", A)


def test_only_covered_microseconds_are_placed_and_release_forgets_them() -> None:
    book = RankBook()
    with pytest.raises(ValueError, match="seed its range first"):
        book.place("gen-1", A)
    book.seed(US, US + 1, [stored("gen-1", A, 0)])  # one µs, read on demand
    book.seed(US - 100, US + 100, [stored("gen-1", A, 7), stored("gen-2", A, 1)])  # the window, read earlier
    assert book.points_of("gen-1") == [stored("gen-1", A, 0)]  # the µs already covered keeps the newer answer
    assert book.points_of("gen-2") == []
    book.seed(US + 200, US + 300, [stored("gen-9", A, 0)])  # outside its own range: ignored
    assert book.points_of("gen-9") == [] and not book.covers(US + 300)
    book.release(US - 100, US + 100)
    assert not book.covers(US) and book.points_of("gen-1") == [] and len(book) == 0


def test_no_sequence_of_batches_reruns_or_changed_records_makes_two_generations_share_a_point() -> None:
    """InfluxDB as a dict point -> id (a write overwrites, a delete removes). Each run seeds a fresh book from
    it, places a shuffled subset in random batches, deletes the stale points, then writes; some records
    change key between runs. After every run each written id has exactly one point, its own, and an id
    whose key did not change kept its point."""
    rng = random.Random(17)
    keys: list[Key] = [("m", "p", US), ("m", None, US), ("m", "p", US + 1), ("n", "p", US)]
    ids = [f"gen-{i:03d}" for i in range(120)]
    key_of = {gen_id: rng.choice(keys) for gen_id in ids}
    influx: dict[tuple[Key, int], str] = {}
    before: dict[str, tuple[Key, int]] = {}
    ever_written: set[str] = set()
    for _run in range(12):
        for gen_id in rng.sample(ids, 5):
            key_of[gen_id] = rng.choice(keys)  # records changed upstream
        book = RankBook()
        book.seed(US - 5, US + 5, [stored(gen_id, key, rank) for (key, rank), gen_id in influx.items()])
        todo = rng.sample(ids, rng.randint(60, 120))
        written_now = set(todo)
        while todo:
            size = rng.randint(1, 25)
            batch, todo = todo[:size], todo[size:]
            placed = {gen_id: book.place(gen_id, key_of[gen_id]) for gen_id in batch}
            for placement in placed.values():
                for stale in placement.stale:
                    influx.pop((stale.key, stale.rank), None)
            for gen_id, placement in placed.items():
                influx[(key_of[gen_id], placement.rank)] = gen_id
        ever_written |= written_now
        points_of: dict[str, list[tuple[Key, int]]] = {}
        for spot, gen_id in influx.items():
            points_of.setdefault(gen_id, []).append(spot)
        assert set(points_of) == ever_written, "a write overwrote another generation's point"
        assert all(len(points) == 1 for points in points_of.values()), "an id holds two points"
        for gen_id, (spot,) in points_of.items():
            if gen_id in written_now:
                assert spot[0] == key_of[gen_id]  # written under its current key, the old point gone
            if gen_id in before and before[gen_id][0] == spot[0]:
                assert before[gen_id] == spot, "a rerun moved an unchanged record"
        before = {gen_id: points[0] for gen_id, points in points_of.items()}
    assert len(ever_written) == len(ids)
