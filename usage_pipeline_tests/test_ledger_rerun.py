"""The daily path against real servers (the emulator over HTTP, a private influxd): no two generations share a
point, a rerun fetches only what is missing and keeps every point where it was, a changed record leaves no
stale point, and the day's checks see a collision if one is ever forced."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.influx.influxql import quote_literal, time_literals
from usage_pipeline.influx.points import MEASUREMENT, microseconds_since_epoch, point_time_ns, to_line
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import is_complete
from usage_pipeline.reconcile import no_duplicates
from usage_pipeline_tests.conftest import capture, yesterday
from usage_pipeline_tests.test_influx_store import gen

DAY = dt.date(2025, 3, 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with run_emulator(seed=31, generations_per_day=2000, days=1, log_path=tmp_path_factory.mktemp("emu") / "emu.log",
                      extra_args=["--analytics-rpm", "0"]) as emulator:
        yield emulator


def points(store: InfluxStore, day: dt.date) -> dict[int, tuple[str, str | None, str]]:
    """time -> (generation id, provider, model) of every point of the day."""
    start, end = time_literals(day)
    series = store.query(f'SELECT "generation_id", "provider", "model" FROM "{MEASUREMENT}" '
                         f"WHERE time >= {start} AND time < {end}")
    return {int(t): (i, p, m) for s in series for t, i, p, m in s["values"]}


def generation_gets(server: EmulatorProcess) -> int:
    return int(server.stats()["by_path"].get("/generation", 0))


def delete_point(store: InfluxStore, model: str, provider: str | None, time_ns: int) -> None:
    store.query(f'DELETE FROM "{MEASUREMENT}" WHERE "model" = {quote_literal(model)} AND "provider" = '
                f"{quote_literal(provider or '')} AND time = {time_ns}")


def test_a_rerun_after_losing_a_tenth_fetches_only_that_tenth_and_keeps_every_point(
        server: EmulatorProcess, store: InfluxStore) -> None:
    day = yesterday()
    truth = server.truth(day)
    count = truth["count"]
    first = capture(server, store)
    assert first.complete and first.summary()["fetched"] == count and first.summary()["reused"] == 0
    original = points(store, day)
    assert store.day_counts(day) == DayCounts(count, count)
    assert any(t % 1000 for t in original), "the emulator's twins share a µs: some point has rank 1"

    lost = sorted(original)[::10]  # a tenth of the day, twins' rank-0 points among them
    for time_ns in lost:
        _, provider, model = original[time_ns]
        delete_point(store, model, provider, time_ns)
    assert store.day_counts(day).points == count - len(lost)

    server.reset_stats()
    second = capture(server, store)
    gets = generation_gets(server)
    assert gets <= 0.12 * count, f"{gets} GET /generation for {len(lost)} missing of {count}"
    summary = second.summary()
    assert (summary["reused"], summary["fetched"], summary["written"]) == (count - len(lost), len(lost), len(lost))
    assert second.complete and no_duplicates(store, day).passed
    assert points(store, day) == original  # the lost came back at their own points; nothing else moved

    server.reset_stats()
    third = capture(server, store)  # an exact day costs no record fetch at all
    assert generation_gets(server) == 0 and third.complete and third.summary()["reused"] == count

    refreshed = capture(server, store, refresh=True)
    assert refreshed.summary()["fetched"] == count and refreshed.summary()["ranks_kept"] == count
    assert points(store, day) == original and no_duplicates(store, day).passed


def test_a_record_whose_identity_changed_leaves_no_stale_point(server: EmulatorProcess, store: InfluxStore) -> None:
    day = yesterday()
    changed = server.truth(day)["ids"][5]
    assert capture(server, store).complete
    (old_time,) = [t for t, (i, _, _) in points(store, day).items() if i == changed]
    server.override_records({changed: {"provider_name": "Another Provider"}})
    try:
        assert capture(server, store).summary()["fetched"] == 0  # stored whole: not looked at again
        refreshed = capture(server, store, refresh=True)  # asked to look again, it sees the change
    finally:
        server.clear_overrides()
    now = {t: p for t, (i, p, _) in points(store, day).items() if i == changed}
    assert list(now.values()) == ["Another Provider"] and old_time // 1000 == next(iter(now)) // 1000
    assert refreshed.summary()["stale_points_deleted"] == 1 and refreshed.complete
    assert no_duplicates(store, day).passed and store.day_counts(day).distinct_ids == server.truth(day)["count"]


def test_writes_rank_over_what_is_stored_so_reruns_in_any_order_keep_every_point(store: InfluxStore) -> None:
    t = dt.datetime(2025, 3, 10, 9, 30, 0, 123456, tzinfo=dt.UTC)
    base = point_time_ns(t, 0)
    store.write_generations([gen("gen-f", t)])  # each write reads what its µs holds first
    store.write_generations([gen("gen-b", t)])
    store.write_generations([gen("gen-d", t), gen("gen-f", t)])
    assert {time: i for time, (i, _, _) in points(store, DAY).items()} == {base: "gen-f", base + 1: "gen-b",
                                                                          base + 2: "gen-d"}
    store.write_generations([gen("gen-d", t)])  # a rerun, in another order: every id keeps its point
    store.write_generations([gen("gen-a", t), gen("gen-b", t)])
    assert {time: i for time, (i, _, _) in points(store, DAY).items()} == {
        base: "gen-f", base + 1: "gen-b", base + 2: "gen-d", base + 3: "gen-a"}
    assert store.day_counts(DAY) == DayCounts(4, 4)


def test_a_forced_collision_or_a_stale_point_shows_in_the_day_counts(store: InfluxStore) -> None:
    """Two generations forced onto one point (each batch ranked alone): InfluxDB keeps one, so the day holds
    fewer distinct ids than generations written, which the full-capture check (distinct ids == OpenRouter's
    count) reports; one generation left at two points breaks points == distinct ids (`no_duplicates`)."""
    t = dt.datetime(2025, 3, 10, 11, 0, 0, 7, tzinfo=dt.UTC)
    store.write_lines([to_line(gen("gen-1", t), 0)])
    store.write_lines([to_line(gen("gen-2", t), 0)])  # rank 0 again: gen-1's point is overwritten
    counts = store.day_counts(DAY)
    assert counts == DayCounts(points=1, distinct_ids=1) and counts.distinct_ids < 2
    assert no_duplicates(store, DAY).passed  # an overwrite leaves no duplicate: only the count shows it
    store.write_lines([to_line(gen("gen-2", t, provider="Azure"), 0)])  # the same id under a second tag set
    verdict = no_duplicates(store, DAY)
    assert not verdict.passed and verdict.metadata["duplicate_points"] == 1


def test_only_ids_stored_once_with_todays_key_label_count_as_complete(store: InfluxStore) -> None:
    """Reused (not fetched) = exactly one point in the window's range, whose api_key is the label analytics
    answers now; a relabelled key, a duplicate or an id not stored means a fetch."""
    t = dt.datetime(2025, 3, 10, 8, 0, 0, 5, tzinfo=dt.UTC)
    store.write_lines([to_line(gen("whole", t), 0), to_line(gen("relabelled", t, provider="P2"), 0),
                       to_line(gen("unkeyed", t, api_key=None), 1), to_line(gen("twice", t, model="m1"), 0),
                       to_line(gen("twice", t, model="m2"), 0)])
    micros = microseconds_since_epoch(t)
    stored = store.stored(micros * 1000, (micros + 1) * 1000)
    assert len(stored) == 5
    asked = {"whole": "key-1", "relabelled": "key-9", "unkeyed": None, "twice": "key-1", "new": "key-1"}
    complete = {gen_id for gen_id, label in asked.items()
                if is_complete([p for p in stored if p.generation_id == gen_id], label)}
    assert complete == {"whole", "unkeyed"}
