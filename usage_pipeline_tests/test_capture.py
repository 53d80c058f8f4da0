"""The client against the emulator over real HTTP: exact capture, pagination, faults, errors."""

from __future__ import annotations

import datetime as dt
import gc
import math
import threading
from pathlib import Path

import pytest
import requests

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.openrouter import gc_freeze
from usage_pipeline.openrouter.capture import DayCapture, WindowTooDense
from usage_pipeline.openrouter.client import OpenRouterClient
from usage_pipeline.openrouter.counts import api_day_counts
from usage_pipeline.openrouter.day import DayOutOfRange, day_bounds
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.transport import OpenRouterAuthError
from usage_pipeline.openrouter.windows import Window
from usage_pipeline_tests.conftest import client_for, yesterday


def truth(server: EmulatorProcess, day: dt.date) -> dict:
    response = requests.get(f"{server.control_url}/truth", params={"date": day.isoformat()}, timeout=30)
    response.raise_for_status()
    return response.json()


def capture(server: EmulatorProcess, day: dt.date, *, key: str | None = None,
            **client_kwargs: int) -> tuple[set[str], DayCapture]:
    with client_for(server, key=key, **client_kwargs) as client:
        run = DayCapture(client, day)
        ids: set[str] = set()
        for batch in run.batches():
            for record in batch:
                assert record.id not in ids, f"{record.id} yielded twice"
                ids.add(record.id)
        return ids, run


def set_faults(server: EmulatorProcess, rules: list[dict]) -> None:
    requests.post(f"{server.control_url}/faults", json={"rules": rules}, timeout=10).raise_for_status()


@pytest.fixture
def no_faults(emulator: EmulatorProcess):
    yield emulator
    requests.delete(f"{emulator.control_url}/faults", timeout=10).raise_for_status()


@pytest.mark.slow
def test_a_day_of_fifty_thousand_is_enumerated_completely_in_windows_that_tile_it(tmp_path: Path) -> None:
    """Five analytics pages of ids: the windows (planned from counts, split when cut) tile the day and list exactly
    the emulator's ids, so a dropped or cut window fails. Ids only: records across windows are fetched by the
    1,500-row-cap and hostile-server tests below and by the Dagster runs."""
    day = yesterday()
    with run_emulator(seed=11, generations_per_day=50_000, days=1, log_path=tmp_path / "emu.log") as server:
        expected = truth(server, day)
        with client_for(server) as client:
            run = DayCapture(client, day)
            windows: list[Window] = []
            ids: list[str] = []
            for window, window_ids in run.enumeration.windows(run.count_buckets()):
                windows.append(window)
                ids.extend(window_ids)
            queries = client.analytics_queries
    count = expected["count"]
    assert count >= 50_000
    assert len(ids) == len(set(ids)) and set(ids) == set(expected["ids"])
    assert (windows[0].start, windows[-1].end) == day_bounds(day)
    assert all(earlier.end == later.start for earlier, later in zip(windows, windows[1:], strict=False))
    assert len(windows) == run.report.windows_queried >= math.ceil(count / 10_000)
    assert queries <= math.ceil(count / 10_000) + 2, run.report.as_dict()  # the count query and at most one cut


@pytest.mark.slow
def test_heavy_hours_are_planned_from_minute_counts_so_no_window_is_cut(tmp_path: Path) -> None:
    """300,000 generations: peak hours hold several windows' worth, so their 3-hour blocks are counted per
    minute. Enumeration (ids only, no record fetches) then needs no split and stays near the minimum."""
    day = yesterday()
    with run_emulator(seed=13, generations_per_day=300_000, days=1, log_path=tmp_path / "emu.log") as server:
        expected = truth(server, day)
        with client_for(server) as client:
            run = DayCapture(client, day)
            buckets = run.count_buckets()
            ids: set[str] = set()
            for _window, window_ids in run.enumeration.windows(buckets):
                ids.update(window_ids)
            queries = client.analytics_queries
    assert ids == set(expected["ids"])
    assert sum(b.count for b in buckets) == expected["count"]
    assert run.report.count_queries > 1 and any(b.end - b.start == dt.timedelta(minutes=1) for b in buckets)
    assert run.report.windows_split == 0
    assert queries <= math.ceil(expected["count"] / (0.9 * 10_000)) + run.report.count_queries + 1


def test_server_cap_below_the_asked_limit_is_learned_from_truncated(tmp_path: Path) -> None:
    """The server caps at 1,500 rows though we ask for 10,000: `truncated` drives the splitting."""
    day = yesterday()
    with run_emulator(seed=5, generations_per_day=6000, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-max-rows", "1500"]) as server:
        expected = truth(server, day)
        ids, run = capture(server, day)
    assert ids == set(expected["ids"])
    assert run.report.row_limit == 1500
    assert run.report.windows_split >= 1
    assert run.report.complete


def test_every_record_carries_its_api_key_and_fields(no_faults: EmulatorProcess) -> None:
    day = yesterday()
    with client_for(no_faults) as client:
        records = [r for batch in DayCapture(client, day).batches() for r in batch]
    assert records and all(r.api_key for r in records)
    assert len({r.api_key for r in records}) > 1
    assert all(r.created_at.date() == day for r in records)
    assert any(r.is_byok for r in records) and any(r.cancelled for r in records)


def test_rate_limits_and_server_errors_are_retried(no_faults: EmulatorProcess) -> None:
    day = yesterday()
    set_faults(no_faults, [
        {"path": "/analytics/query", "status": 429, "count": 2, "retry_after": 1},
        {"path": "/generation", "status": 503, "count": 5},
        {"path": "/generation", "status": 529, "count": 3},
        {"path": "/generation", "status": 429, "count": 3, "retry_after": 1},
    ])
    ids, run = capture(no_faults, day)
    assert ids == set(truth(no_faults, day)["ids"])
    assert run.report.retries >= 10  # the 5xx of records and the analytics 429s
    assert run.report.throttled >= 3  # record 429s: paced, not charged to the record's retry budget
    assert run.report.complete


def test_fresh_generations_404_is_waited_out(tmp_path: Path) -> None:
    """Every record answers 404 twice before it appears: the client backs off and gets all of them."""
    day = yesterday()
    with run_emulator(seed=4, generations_per_day=160, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--generation-404-first", "2"]) as server:
        ids, run = capture(server, day)
        expected, stats = truth(server, day), server.stats()
    assert ids == set(expected["ids"])
    assert stats["by_status"]["404"] == 2 * expected["count"]  # every id was refused twice ...
    # ... and retried at least once: a raced pair (the day's tail) can meet both of its 404s in one attempt
    assert run.report.retries >= expected["count"]
    assert run.report.complete


def test_a_record_that_stays_404_is_reported_missing_not_dropped(tmp_path: Path) -> None:
    day = yesterday()
    with run_emulator(seed=3, generations_per_day=40, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--generation-404-first", "1000"]) as server:
        ids, run = capture(server, day, not_found_retries=1)
        expected = truth(server, day)
    assert ids == set()
    assert sorted(run.report.missing) == sorted(expected["ids"])
    assert run.report.ids_enumerated == expected["count"]
    assert not run.report.complete


def test_late_arriving_generations_are_captured_on_rerun(tmp_path: Path) -> None:
    day = yesterday()
    with run_emulator(seed=9, generations_per_day=300, days=1, log_path=tmp_path / "emu.log") as server:
        first, _ = capture(server, day)
        added = requests.post(f"{server.control_url}/generations", json={"date": day.isoformat(), "count": 7},
                              timeout=10).json()
        second, _ = capture(server, day)
        expected = set(truth(server, day)["ids"])
    late = set(added["ids"])
    assert len(late) == 7 and not late & first
    assert second == expected == first | late


def test_a_window_that_cannot_be_narrowed_enough_fails_loudly(tmp_path: Path) -> None:
    """40 generations in one microsecond against a 30-row cap can never be enumerated apart."""
    day = yesterday()
    with run_emulator(seed=7, generations_per_day=200, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-max-rows", "30", "--analytics-rpm", "0"]) as server:
        burst = f"{day.isoformat()}T13:14:15.161718+00:00"
        requests.post(f"{server.control_url}/generations", json={"date": day.isoformat(), "count": 40, "at": burst},
                      timeout=10).raise_for_status()
        with pytest.raises(WindowTooDense, match="cannot be enumerated exactly") as info:
            capture(server, day, analytics_rpm=100_000)
    assert "13:14:15.161" in str(info.value)


def test_inference_key_is_refused_with_a_management_key_hint(no_faults: EmulatorProcess) -> None:
    with pytest.raises(OpenRouterAuthError, match="management key") as info:
        capture(no_faults, yesterday(), key=no_faults.inference_key)
    assert no_faults.inference_key not in str(info.value)


def test_unknown_key_is_refused_and_not_echoed(no_faults: EmulatorProcess) -> None:
    secret = "sk-or-v1-this-must-never-be-printed"
    with pytest.raises(OpenRouterAuthError, match="401") as info:
        capture(no_faults, yesterday(), key=secret)
    assert secret not in str(info.value) and secret not in repr(info.value)


def test_days_outside_the_generation_window_fail_fast(no_faults: EmulatorProcess) -> None:
    today = dt.datetime.now(dt.UTC).date()
    with client_for(no_faults) as client:
        with pytest.raises(DayOutOfRange, match="31-day window"):
            DayCapture(client, today - dt.timedelta(days=40))
        with pytest.raises(DayOutOfRange, match="not complete"):
            DayCapture(client, today)
        assert client.analytics_queries == 0


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


def settings_for(server: EmulatorProcess, **kwargs: object) -> OpenRouterSettings:
    return OpenRouterSettings(api_key=server.management_key, base_url=server.base_url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_hostile_server_is_captured_exactly_at_its_pace(tmp_path: Path) -> None:
    """Latency with a long tail, hung records, an account-wide 429 limit answered partly by a CDN's HTML
    pages with and without Retry-After, label-named analytics: the day is still exact."""
    day = yesterday()
    hostile = ["--latency-ms", "30", "--hang-share", "0.004", "--hang-seconds", "60", "--rate-limit", "300",
               "--html-error-share", "0.3", "--retry-after-share", "0.5", "--analytics-labels", "on"]
    with run_emulator(seed=21, generations_per_day=3000, days=1, log_path=tmp_path / "emu.log",
                      extra_args=hostile) as server:
        with OpenRouterClient(settings_for(server, record_timeout_s=30.0)) as client:
            run = DayCapture(client, day)
            ids = {record.id for batch in run.batches() for record in batch}
        expected = truth(server, day)
        stats = server.stats()
    report = run.report
    assert ids == set(expected["ids"]) and report.complete, report.as_dict()
    assert stats["rate_limited"] > 0 and stats["html_errors"] > 0 and stats["hangs"] > 0
    assert report.throttled > 0  # 429s were met ...
    assert not report.missing_reasons  # ... and none cost a record
    assert report.hedged > 0  # hung requests were raced by a second one, not waited out for 60 s
    assert report.peak_in_flight > 32  # the limit grew from its start


def test_the_ceiling_bounds_requests_in_flight(tmp_path: Path) -> None:
    day = yesterday()
    with run_emulator(seed=22, generations_per_day=600, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--latency-ms", "20"]) as server:
        with OpenRouterClient(settings_for(server, max_concurrency=6)) as client:
            run = DayCapture(client, day)
            ids = {record.id for batch in run.batches() for record in batch}
        stats = server.stats()
        expected = truth(server, day)
    assert ids == set(expected["ids"])
    # Hedges (a second request racing one late by over a second) ride outside the limit: on a loaded machine
    # a 20 ms answer may still be late.
    assert run.report.peak_in_flight <= 6 and stats["max_in_flight"] <= 6 + run.report.hedged


def test_a_refused_key_on_a_record_stops_the_day_without_echoing_it(no_faults: EmulatorProcess) -> None:
    set_faults(no_faults, [{"path": "/generation", "status": 401, "count": 1}])
    with pytest.raises(OpenRouterAuthError, match="401") as info:
        capture(no_faults, yesterday())
    assert no_faults.management_key not in str(info.value)


def test_a_reader_that_stops_early_stops_the_capture(no_faults: EmulatorProcess) -> None:
    with client_for(no_faults) as client:
        run = DayCapture(client, yesterday())
        batches = run.batches()
        assert next(batches)
        assert gc_freeze.holders() == 1  # while it runs, full collections leave older objects alone
        batches.close()  # the writer gave up: the fetching thread must end, not linger
        with pytest.raises(RuntimeError, match="boom"):
            for _ in DayCapture(client, yesterday()).batches():
                raise RuntimeError("boom")
    assert not [t.name for t in threading.enumerate() if t.name.startswith("capture-")]
    assert gc_freeze.holders() == 0 and gc.get_freeze_count() == 0  # ... and gives them back, also on failure


@pytest.mark.parametrize("inclusive", [False, True], ids=["end-exclusive", "end-inclusive"])
def test_the_day_is_the_same_set_whether_the_end_bound_is_inclusive_or_not(tmp_path: Path, inclusive: bool) -> None:
    day = yesterday()
    next_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    with run_emulator(seed=23, generations_per_day=400, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--inclusive-end", "on" if inclusive else "off"]) as server:
        last_instant = server.add_generations(day, 2, at=next_day - dt.timedelta(microseconds=1))
        first_instant = server.add_generations(day, 2, at=next_day - dt.timedelta(days=1))
        server.add_generations(day + dt.timedelta(days=1), 3, at=next_day)  # the next day's first µs
        ids, run = capture(server, day)
        expected = truth(server, day)
        with client_for(server) as client:
            counts = api_day_counts(client, day)
    assert set(last_instant + first_instant) <= ids
    assert ids == set(expected["ids"]) and run.report.complete
    assert counts.requests == expected["count"] == len(ids)
    assert run.report.next_day_ids_skipped == (3 if inclusive else 0)
