"""The client against the emulator over real HTTP: exact capture, pagination, faults, errors."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
import requests

from usage_pipeline.openrouter.capture import DayCapture, DayOutOfRange, WindowTooDense
from usage_pipeline.openrouter.counts import api_day_counts
from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.openrouter.transport import OpenRouterAuthError
from usage_pipeline_tests.conftest import client_for, yesterday


def truth(server: EmulatorProcess, day: dt.date) -> dict:
    response = requests.get(f"{server.control_url}/truth", params={"date": day.isoformat()}, timeout=30)
    response.raise_for_status()
    return response.json()


def capture(server: EmulatorProcess, day: dt.date, **client_kwargs: object) -> tuple[set[str], DayCapture]:
    with client_for(server, **client_kwargs) as client:
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


def test_fifty_thousand_generation_day_is_captured_exactly(tmp_path: Path) -> None:
    day = yesterday()
    with run_emulator(seed=11, generations_per_day=50_000, days=1, log_path=tmp_path / "emu.log") as server:
        expected = truth(server, day)
        ids, run = capture(server, day)
    assert expected["count"] >= 50_000
    assert ids == set(expected["ids"])
    report = run.report
    assert report.complete, report.as_dict()
    assert report.ids_enumerated == report.records_fetched == expected["count"]
    assert report.analytics_queries <= math.ceil(expected["count"] / 10_000) + 2, report.as_dict()
    assert report.windows_queried >= math.ceil(expected["count"] / 10_000)


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
            for _window, window_ids in run._enumerate(buckets):
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
    assert records and all(r.api_key_id for r in records)
    assert len({r.api_key_id for r in records}) > 1
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
    assert run.report.retries >= 13
    assert run.report.complete


def test_fresh_generations_404_is_waited_out(tmp_path: Path) -> None:
    """Every record answers 404 twice before it appears: the client backs off and gets all of them."""
    day = yesterday()
    with run_emulator(seed=4, generations_per_day=160, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--generation-404-first", "2"]) as server:
        ids, run = capture(server, day)
        expected = truth(server, day)
    assert ids == set(expected["ids"])
    assert run.report.retries >= 2 * expected["count"]
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
    today = dt.datetime.now(dt.timezone.utc).date()
    with client_for(no_faults) as client:
        with pytest.raises(DayOutOfRange, match="31-day window"):
            DayCapture(client, today - dt.timedelta(days=40))
        with pytest.raises(DayOutOfRange, match="not complete"):
            DayCapture(client, today)
        assert client.analytics_queries == 0


def test_api_counts_match_the_ground_truth(no_faults: EmulatorProcess) -> None:
    day = yesterday()
    expected = truth(no_faults, day)
    with client_for(no_faults) as client:
        counts = api_day_counts(client, day)
    assert {m: u.requests for m, u in counts.analytics.items()} == expected["by_model"]
    assert counts.activity_requests == expected["by_model"]
    assert counts.activity_usage is not None
    for model, usage in counts.activity_usage.items():
        assert counts.analytics[model].usage == pytest.approx(usage, rel=1e-9)
