"""A day captured from the emulator over real HTTP into a real influxd: exact, paginated, through faults and errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from pathlib import Path

import pytest
import requests

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import record_day
from usage_pipeline.openrouter.counts import api_day_counts
from usage_pipeline.openrouter.day import DayOutOfRange, day_bounds
from usage_pipeline.openrouter.enumeration import Listing, Window, WindowTooDense, day_windows
from usage_pipeline.openrouter.errors import OpenRouterAuthError
from usage_pipeline.openrouter.records import RecordRetries
from usage_pipeline.openrouter.source import OpenRouterSource
from usage_pipeline_tests.conftest import capture, client_for, settings_for, yesterday


def truth(server: EmulatorProcess, day: dt.date) -> dict:
    response = requests.get(f"{server.control_url}/truth", params={"date": day.isoformat()}, timeout=30)
    response.raise_for_status()
    return response.json()


def set_faults(server: EmulatorProcess, rules: list[dict]) -> None:
    requests.post(f"{server.control_url}/faults", json={"rules": rules}, timeout=10).raise_for_status()


@pytest.fixture
def no_faults(emulator: EmulatorProcess):
    yield emulator
    requests.delete(f"{emulator.control_url}/faults", timeout=10).raise_for_status()


def list_windows(server: EmulatorProcess, day: dt.date) -> tuple[list[Window], list[str], Listing, int]:
    """Enumeration alone (no record fetches): the windows, their ids in order, the listing, the queries."""
    async def run() -> tuple[list[Window], list[str], Listing, int]:
        listing = Listing()
        windows: list[Window] = []
        ids: list[str] = []
        async with OpenRouterSource(settings_for(server)) as source:
            async for window in day_windows(source, day, listing):
                windows.append(window.window)
                ids.extend(window.ids)
            return windows, ids, listing, source.analytics_queries

    return asyncio.run(run())


@pytest.mark.slow
def test_a_day_of_fifty_thousand_is_enumerated_completely_in_windows_that_tile_it(tmp_path: Path) -> None:
    """Five analytics pages of ids: the windows (planned from counts, split when cut) tile the day and list exactly
    the emulator's ids, so a dropped or cut window fails."""
    day = yesterday()
    with run_emulator(seed=11, generations_per_day=50_000, days=1, log_path=tmp_path / "emu.log") as server:
        expected = truth(server, day)
        windows, ids, listing, queries = list_windows(server, day)
    count = expected["count"]
    assert count >= 50_000
    assert len(ids) == len(set(ids)) and set(ids) == set(expected["ids"])
    assert (windows[0].start, windows[-1].end) == day_bounds(day)
    assert all(earlier.end == later.start for earlier, later in zip(windows, windows[1:], strict=False))
    assert len(windows) == listing.windows_queried >= math.ceil(count / 10_000)
    assert queries <= math.ceil(count / 10_000) + 2, listing  # the count query and at most one cut


@pytest.mark.slow
def test_heavy_hours_are_planned_from_minute_counts_so_no_window_is_cut(tmp_path: Path) -> None:
    """300,000 generations: peak hours hold several windows' worth, so their 3-hour blocks are counted per
    minute. Enumeration then needs no split and stays near the minimum."""
    day = yesterday()
    with run_emulator(seed=13, generations_per_day=300_000, days=1, log_path=tmp_path / "emu.log") as server:
        expected = truth(server, day)
        _, ids, listing, queries = list_windows(server, day)
    assert set(ids) == set(expected["ids"])
    assert listing.expected_from_counts == expected["count"]
    assert listing.count_queries > 1 and listing.windows_split == 0
    assert queries <= math.ceil(expected["count"] / (0.9 * 10_000)) + listing.count_queries + 1


def test_server_cap_below_the_asked_limit_is_learned_from_truncated(tmp_path: Path, store: InfluxStore) -> None:
    """The server caps at 1,500 rows though we ask for 10,000: `truncated` drives the splitting."""
    day = yesterday()
    with run_emulator(seed=5, generations_per_day=6000, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-max-rows", "1500"]) as server:
        expected = truth(server, day)
        recording = capture(server, store)
    assert store.day_ids(day) == set(expected["ids"])
    assert recording.listing.row_limit == 1500 and recording.listing.windows_split >= 1
    assert recording.complete and recording.recorded.written == expected["count"]


def test_rate_limits_and_server_errors_are_retried(no_faults: EmulatorProcess, store: InfluxStore) -> None:
    set_faults(no_faults, [
        {"path": "/analytics/query", "status": 429, "count": 2, "retry_after": 1},
        {"path": "/generation", "status": 503, "count": 5},
        {"path": "/generation", "status": 529, "count": 3},
        {"path": "/generation", "status": 429, "count": 3, "retry_after": 1},
    ])
    recording = capture(no_faults, store)
    assert store.day_ids(yesterday()) == set(truth(no_faults, yesterday())["ids"])
    assert recording.fetcher.figures.retries >= 11  # every 5xx and 429 of a record cost it one attempt
    assert recording.fetcher.source.retries == 2
    assert recording.fetcher.source.pace.figures.throttled == 3 and recording.complete


def test_fresh_generations_404_is_waited_out(tmp_path: Path, store: InfluxStore) -> None:
    """Every record answers 404 twice before it appears: the client backs off and gets all of them."""
    day = yesterday()
    with run_emulator(seed=4, generations_per_day=160, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--generation-404-first", "2"]) as server:
        recording = capture(server, store)
        expected, stats = truth(server, day), server.stats()
    assert store.day_ids(day) == set(expected["ids"])
    assert stats["by_status"]["404"] == 2 * expected["count"]  # every id was refused twice, and retried twice
    assert recording.fetcher.figures.retries == 2 * expected["count"] and recording.complete


def test_a_record_that_stays_404_is_reported_missing_not_dropped(tmp_path: Path, store: InfluxStore) -> None:
    day = yesterday()
    with run_emulator(seed=3, generations_per_day=40, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--generation-404-first", "1000"]) as server:
        recording = capture(server, store, retries=RecordRetries(not_found=1))
        expected = truth(server, day)
    assert store.day_ids(day) == set()
    assert sorted(recording.recorded.missing) == sorted(expected["ids"])
    assert set(recording.recorded.missing.values()) == {"still 404 after retries"}
    assert recording.listing.ids_enumerated == expected["count"] and not recording.complete
    assert f"{expected['count']} generation(s) still missing after retries" in recording.problems()


def test_late_arriving_generations_are_captured_on_rerun(tmp_path: Path, store: InfluxStore) -> None:
    day = yesterday()
    with run_emulator(seed=9, generations_per_day=300, days=1, log_path=tmp_path / "emu.log") as server:
        capture(server, store)
        first = store.day_ids(day)
        added = requests.post(f"{server.control_url}/generations", json={"date": day.isoformat(), "count": 7},
                              timeout=10).json()
        second = capture(server, store)
        expected = set(truth(server, day)["ids"])
    late = set(added["ids"])
    assert len(late) == 7 and not late & first
    assert store.day_ids(day) == expected == first | late
    assert (second.recorded.fetched, second.recorded.reused) == (7, 300)  # only the new ones were fetched


def test_a_window_that_cannot_be_narrowed_enough_fails_loudly(tmp_path: Path, store: InfluxStore) -> None:
    """40 generations in one microsecond against a 30-row cap can never be enumerated apart."""
    day = yesterday()
    with run_emulator(seed=7, generations_per_day=200, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-max-rows", "30", "--analytics-rpm", "0"]) as server:
        burst = f"{day.isoformat()}T13:14:15.161718+00:00"
        requests.post(f"{server.control_url}/generations", json={"date": day.isoformat(), "count": 40, "at": burst},
                      timeout=10).raise_for_status()
        with pytest.raises(WindowTooDense, match="cannot be enumerated exactly") as info:
            capture(server, store, analytics_rpm=100_000)
    assert "13:14:15.161" in str(info.value)


def test_inference_key_is_refused_with_a_management_key_hint(no_faults: EmulatorProcess, store: InfluxStore) -> None:
    with pytest.raises(OpenRouterAuthError, match="management key") as info:
        capture(no_faults, store, key=no_faults.inference_key)
    assert no_faults.inference_key not in str(info.value)


def test_unknown_key_is_refused_and_not_echoed(no_faults: EmulatorProcess, store: InfluxStore) -> None:
    secret = "sk-or-v1-this-must-never-be-printed"
    with pytest.raises(OpenRouterAuthError, match="401") as info:
        capture(no_faults, store, key=secret)
    assert secret not in str(info.value) and secret not in repr(info.value)


def test_days_outside_the_generation_window_fail_fast(no_faults: EmulatorProcess, store: InfluxStore) -> None:
    today = dt.datetime.now(dt.UTC).date()
    before = no_faults.stats()["by_path"].get("/analytics/query", 0)
    with pytest.raises(DayOutOfRange, match="31-day window"):
        record_day(settings_for(no_faults), store.settings, today - dt.timedelta(days=40))
    with pytest.raises(DayOutOfRange, match="not complete"):
        record_day(settings_for(no_faults), store.settings, today)
    assert no_faults.stats()["by_path"].get("/analytics/query", 0) == before  # nothing was asked


def test_api_counts_match_the_ground_truth_without_using_labels_as_names(no_faults: EmulatorProcess) -> None:
    day = yesterday()
    expected = truth(no_faults, day)
    with client_for(no_faults) as client:
        counts = api_day_counts(client, day)
    assert counts.requests == expected["count"]
    assert counts.usage == pytest.approx(expected["cost"], rel=1e-9)
    assert counts.activity is not None
    assert {slug: u.requests for (slug, _), u in counts.activity.items()} == expected["by_model"]
    assert {permaslug: u.requests for (_, permaslug), u in counts.activity.items()} == expected["by_model_permaslug"]
    # Analytics answers labels ("OpenAI: GPT-4.1"), never the slugs /generation records.
    assert not set(counts.by_label) & set(expected["by_model"])
    assert sorted(u.requests for u in counts.by_label.values()) == sorted(expected["by_model"].values())


@pytest.mark.slow
def test_a_hostile_server_is_captured_exactly_at_its_pace(tmp_path: Path, store: InfluxStore) -> None:
    """Latency with a long tail, hung records, an account-wide 429 limit answered partly by a CDN's HTML
    pages with and without Retry-After, label-named analytics: the day is still exact, and a hung record
    cost about a second (its attempt timed out at twice the recent p99), not its whole 60 s hang."""
    day = yesterday()
    hostile = ["--latency-ms", "30", "--hang-share", "0.004", "--hang-seconds", "60", "--rate-limit", "300",
               "--html-error-share", "0.3", "--retry-after-share", "0.5", "--analytics-labels", "on"]
    with run_emulator(seed=21, generations_per_day=3000, days=1, log_path=tmp_path / "emu.log",
                      extra_args=hostile) as server:
        recording = capture(server, store, settings={"record_timeout_s": 30.0})
        expected = truth(server, day)
        stats = server.stats()
    assert store.day_ids(day) == set(expected["ids"]) and recording.complete, recording.summary()
    assert stats["rate_limited"] > 0 and stats["html_errors"] > 0 and stats["hangs"] > 0
    pace = recording.fetcher.source.pace
    assert pace.figures.throttled > 0 and pace.figures.account_pauses > 0  # 429s were met and honoured ...
    assert not recording.recorded.missing  # ... and none cost a record
    assert recording.fetcher.figures.timeouts >= stats["hangs"]  # every hang was cut and retried ...
    assert pace.attempt_timeout_s < 5  # ... at twice the p99 of 30 ms answers, far below the 30 s setting


def test_the_ceiling_bounds_requests_in_flight(tmp_path: Path, store: InfluxStore) -> None:
    day = yesterday()
    with run_emulator(seed=22, generations_per_day=600, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--latency-ms", "20"]) as server:
        recording = capture(server, store, settings={"max_concurrency": 6})
        stats = server.stats()
        expected = truth(server, day)
    assert store.day_ids(day) == set(expected["ids"])
    assert recording.fetcher.source.pace.figures.peak_in_flight == 6 and stats["max_in_flight"] <= 6


def test_a_refused_key_on_a_record_stops_the_day_without_echoing_it(no_faults: EmulatorProcess,
                                                                   store: InfluxStore) -> None:
    set_faults(no_faults, [{"path": "/generation", "status": 401, "count": 1}])
    with pytest.raises(OpenRouterAuthError, match="401") as info:
        capture(no_faults, store)
    assert no_faults.management_key not in str(info.value)


@pytest.mark.parametrize("inclusive", [False, True], ids=["end-exclusive", "end-inclusive"])
def test_the_day_is_the_same_set_whether_the_end_bound_is_inclusive_or_not(tmp_path: Path, store: InfluxStore,
                                                                            inclusive: bool) -> None:
    day = yesterday()
    next_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    with run_emulator(seed=23, generations_per_day=400, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--inclusive-end", "on" if inclusive else "off"]) as server:
        last_instant = server.add_generations(day, 2, at=next_day - dt.timedelta(microseconds=1))
        first_instant = server.add_generations(day, 2, at=next_day - dt.timedelta(days=1))
        server.add_generations(day + dt.timedelta(days=1), 3, at=next_day)  # the next day's first µs
        recording = capture(server, store)
        expected = truth(server, day)
        with client_for(server) as client:
            counts = api_day_counts(client, day)
    ids = store.day_ids(day)
    assert set(last_instant + first_instant) <= ids
    assert ids == set(expected["ids"]) and recording.complete
    assert counts.requests == expected["count"] == len(ids)
    assert recording.recorded.next_day_ids_skipped == (3 if inclusive else 0)
