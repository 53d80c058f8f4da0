"""The daily path against real servers (the emulator over HTTP, a private influxd): streamed batches never
make two generations share a point, a rerun fetches only what is missing and keeps every point where it
was, a changed record leaves no stale point, and the day's checks see a collision if one is ever forced."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.influx.day_writer import DayWriter
from usage_pipeline.influx.influxql import time_literals
from usage_pipeline.influx.points import MEASUREMENT, identity_key, point_time_ns, to_lines
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import record_day
from usage_pipeline.openrouter import fetching
from usage_pipeline.openrouter.capture import DayCapture
from usage_pipeline.openrouter.windows import Window
from usage_pipeline.reconcile import no_duplicates
from usage_pipeline_tests.conftest import client_for, yesterday
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


def test_a_rerun_after_losing_a_tenth_fetches_only_that_tenth_and_keeps_every_point(
        server: EmulatorProcess, store: InfluxStore) -> None:
    day = yesterday()
    truth = server.truth(day)
    count = truth["count"]
    with client_for(server) as client:
        first = record_day(client, store, day)
        assert first.complete and first.summary()["fetched"] == count and first.summary()["reused"] == 0
        original = points(store, day)
        assert store.day_counts(day) == DayCounts(count, count)
        assert any(t % 1000 for t in original), "the emulator's twins share a µs: some point has rank 1"

        lost = sorted(original)[::10]  # a tenth of the day, twins' rank-0 points among them
        for time_ns in lost:
            _, provider, model = original[time_ns]
            store.delete_point(model, provider, time_ns)
        assert store.day_counts(day).points == count - len(lost)

        server.reset_stats()
        second = record_day(client, store, day)
        gets = generation_gets(server)
        assert gets <= 0.12 * count, f"{gets} GET /generation for {len(lost)} missing of {count}"
        summary = second.summary()
        assert (summary["reused"], summary["fetched"], summary["written"]) == (count - len(lost), len(lost), len(lost))
        assert second.complete and no_duplicates(store, day).passed
        assert points(store, day) == original  # the lost came back at their own points; nothing else moved

        server.reset_stats()
        third = record_day(client, store, day)  # an exact day costs no record fetch at all
        assert generation_gets(server) == 0 and third.complete and third.summary()["reused"] == count

        refreshed = record_day(client, store, day, refresh=True)
        assert refreshed.summary()["fetched"] == count and refreshed.summary()["ranks_kept"] == count
        assert points(store, day) == original and no_duplicates(store, day).passed


def test_twins_streamed_in_different_batches_keep_apart(server: EmulatorProcess, store: InfluxStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 5: generations sharing (model, provider, µs) arrive in different batches, which ranking
    each batch alone would put on one point (the second overwriting the first)."""
    monkeypatch.setattr(fetching, "BATCH_RECORDS", 5)
    day = yesterday()
    batch_of: dict[str, int] = {}
    sharing: dict[tuple[str, str | None, int], list[str]] = {}  # (model, provider, µs) -> ids
    with client_for(server) as client, DayWriter(store) as writer:
        capture = DayCapture(client, day, stored=writer)
        for number, batch in enumerate(capture.batches()):
            writer.write(batch)
            for record in batch:
                batch_of[record.id] = number
                sharing.setdefault(identity_key(record), []).append(record.id)
    split_twins = [ids for ids in sharing.values() if len({batch_of[i] for i in ids}) > 1]
    assert split_twins, "no twins were split across batches: the test proves nothing"
    assert capture.report.complete and capture.report.batches > 100
    stored = {gen_id for gen_id, _, _ in points(store, day).values()}
    assert stored == set(batch_of), f"lost: {sorted(set(batch_of) - stored)[:5]} (split twins: {split_twins[:3]})"
    assert store.day_counts(day) == DayCounts(len(batch_of), len(batch_of))


def test_a_record_whose_identity_changed_leaves_no_stale_point(server: EmulatorProcess, store: InfluxStore) -> None:
    day = yesterday()
    changed = server.truth(day)["ids"][5]
    with client_for(server) as client:
        assert record_day(client, store, day).complete
        (old_time,) = [t for t, (i, _, _) in points(store, day).items() if i == changed]
        server.override_records({changed: {"provider_name": "Another Provider"}})
        try:
            assert record_day(client, store, day).summary()["fetched"] == 0  # stored whole: not looked at again
            refreshed = record_day(client, store, day, refresh=True)  # asked to look again, it sees the change
        finally:
            server.clear_overrides()
    now = {t: p for t, (i, p, _) in points(store, day).items() if i == changed}
    assert list(now.values()) == ["Another Provider"] and old_time // 1000 == next(iter(now)) // 1000
    assert refreshed.summary()["stale_points_deleted"] == 1 and refreshed.complete
    assert no_duplicates(store, day).passed and store.day_counts(day).distinct_ids == server.truth(day)["count"]


def test_the_writer_ranks_across_batches_and_reruns_where_ranking_a_batch_alone_collides(store: InfluxStore) -> None:
    t = dt.datetime(2025, 3, 10, 9, 30, 0, 123456, tzinfo=dt.UTC)
    base = point_time_ns(t, 0)
    with DayWriter(store) as writer:  # no window opened: each µs is read from InfluxDB when first met
        writer.write([gen("gen-f", t)])
        writer.write([gen("gen-b", t)])
        writer.write([gen("gen-d", t), gen("gen-f", t)])
    assert {time: i for time, (i, _, _) in points(store, DAY).items()} == {base: "gen-f", base + 1: "gen-b",
                                                                          base + 2: "gen-d"}
    with DayWriter(store) as rerun:  # a rerun, in another order: every id keeps its point
        rerun.write([gen("gen-d", t)])
        rerun.write([gen("gen-a", t), gen("gen-b", t)])
    assert {time: i for time, (i, _, _) in points(store, DAY).items()} == {
        base: "gen-f", base + 1: "gen-b", base + 2: "gen-d", base + 3: "gen-a"}
    assert store.day_counts(DAY) == DayCounts(4, 4)


def test_a_forced_collision_or_a_stale_point_shows_in_the_day_counts(store: InfluxStore) -> None:
    """Two generations forced onto one point (each batch ranked alone): InfluxDB keeps one, so the day holds
    fewer distinct ids than generations written, which the full-capture check (distinct ids == OpenRouter's
    count) reports; one generation left at two points breaks points == distinct ids (`no_duplicates`)."""
    t = dt.datetime(2025, 3, 10, 11, 0, 0, 7, tzinfo=dt.UTC)
    store.write_lines(to_lines([gen("gen-1", t)]))
    store.write_lines(to_lines([gen("gen-2", t)]))  # rank 0 again: gen-1's point is overwritten
    counts = store.day_counts(DAY)
    assert counts == DayCounts(points=1, distinct_ids=1) and counts.distinct_ids < 2
    assert no_duplicates(store, DAY).passed  # an overwrite leaves no duplicate: only the count shows it
    store.write_lines(to_lines([gen("gen-2", t, provider="Azure")]))  # the same id under a second tag set
    verdict = no_duplicates(store, DAY)
    assert not verdict.passed and verdict.metadata["duplicate_points"] == 1


def test_only_ids_stored_once_with_todays_key_label_count_as_complete(store: InfluxStore) -> None:
    """Reused (not fetched) = exactly one point in the window's range, whose api_key is the label analytics
    answers now; a relabelled key, a duplicate, an id not stored, or a refresh means a fetch."""
    t = dt.datetime(2025, 3, 10, 8, 0, 0, 5, tzinfo=dt.UTC)
    store.write_lines(to_lines([gen("whole", t), gen("relabelled", t, provider="P2"), gen("unkeyed", t, api_key=None),
                                gen("twice", t, model="m1")]))
    store.write_lines(to_lines([gen("twice", t, model="m2")]))
    window = Window(t.replace(hour=7), t.replace(hour=9), 4.0)
    asked = {"whole": "key-1", "relabelled": "key-9", "unkeyed": None, "twice": "key-1", "new": "key-1"}
    with DayWriter(store) as writer:
        assert writer.window_opened(window, asked) == {"whole", "unkeyed"}
        assert writer.totals.stored_points_read == 5
    with DayWriter(store, refresh=True) as refreshing:
        assert refreshing.window_opened(window, asked) == set()
        # Refreshing still seeds the ranks: a rewrite lands on the stored point, a duplicate loses its extra.
        refreshing.write([gen("whole", t), gen("twice", t, model="m2")])
        assert refreshing.totals.ranks_kept == 2 and refreshing.totals.stale_deleted == 1
    assert store.day_counts(DAY) == DayCounts(4, 4)
