"""The capture against the emulator's fault knobs over real HTTP: records stream out while their window is
still open, lone 429s and lone 5xx cost their own request a retry and pause nothing, first-fetch 404s are
waited out; every day ends exact."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytest

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.openrouter import fetching
from usage_pipeline.openrouter.capture import DayCapture
from usage_pipeline.openrouter.windows import Window
from usage_pipeline_tests.conftest import client_for, yesterday


class Spy:
    """A `StoredRecords` that holds nothing and notes what the capture tells it, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def window_opened(self, window: Window, ids: Mapping[str, Any]) -> Collection[str]:
        self.events.append(("opened", window))
        return ()

    def window_closed(self, window: Window) -> None:
        self.events.append(("closed", window))


def capture_day(server: EmulatorProcess, spy: Spy | None = None) -> tuple[set[str], DayCapture]:
    day = yesterday()
    with client_for(server) as client:
        run = DayCapture(client, day, stored=spy)
        ids: set[str] = set()
        for batch in run.batches():
            assert not ids & {r.id for r in batch}
            ids.update(r.id for r in batch)
            if spy is not None:
                spy.events.append(("batch", len(batch)))
    return ids, run


def test_records_stream_out_in_batches_while_their_window_waits_for_its_404s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One window of 400 ids, a fifth of them 404 on their first fetch: records leave in batches of 25 as
    they arrive (a whole-window hand-over would be one batch, after the slowest 404), and the window closes
    once, after its last batch was written."""
    monkeypatch.setattr(fetching, "BATCH_RECORDS", 25)
    with run_emulator(seed=51, generations_per_day=400, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--first-404-share", "0.2"]) as server:
        spy = Spy()
        ids, run = capture_day(server, spy)
        truth, stats = server.truth(yesterday()), server.stats()
    assert ids == set(truth["ids"]) and run.report.complete
    assert stats["first_404s"] >= 40 and run.report.retries >= stats["first_404s"]
    kinds = [kind for kind, _ in spy.events]
    assert kinds.count("opened") == kinds.count("closed") == run.report.windows_queried == 1
    assert kinds.count("batch") >= 400 // 25 and kinds[-1] == "closed" and kinds[0] == "opened"
    assert run.report.peak_open_windows == 1


def test_lone_429s_delay_only_their_own_request(tmp_path: Path) -> None:
    """2% of record fetches answer 429 with Retry-After: 1 and no rate-limit header: each is retried after
    its own second; nothing pauses every request, and none costs a record."""
    with run_emulator(seed=52, generations_per_day=1500, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--throttle-share", "0.02"]) as server:
        ids, run = capture_day(server)
        truth, stats = server.truth(yesterday()), server.stats()
    report = run.report
    assert ids == set(truth["ids"]) and report.complete, report.as_dict()
    assert stats["throttled"] > 10 and report.throttled == report.throttled_lone
    # every 429 sent was met, but for those to a raced request cancelled once its twin brought the record
    assert stats["throttled"] - report.hedged <= report.throttled <= stats["throttled"]
    assert report.account_pauses == 0 and report.paused_s == 0
    assert not report.missing_reasons


def test_lone_5xx_are_retried_and_the_day_is_exact(tmp_path: Path) -> None:
    with run_emulator(seed=53, generations_per_day=1500, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--fault-rate", "0.01", "--fault-statuses", "503"]) as server:
        ids, run = capture_day(server)
        truth, stats = server.truth(yesterday()), server.stats()
    assert ids == set(truth["ids"]) and run.report.complete
    assert stats["random_faults"] > 5 and run.report.retries >= stats["random_faults"]
    assert run.report.account_pauses == 0


@pytest.mark.slow
def test_the_days_last_requests_spend_the_windows_budget_at_once_in_raced_pairs(tmp_path: Path) -> None:
    """A 300/s account budget stated in X-RateLimit-* headers, and 2% lone 429s: once what is left fits in
    the window's rest, the last requests go unpaced, and twice each while it fits twice (a lone 429 on one
    twin then costs nothing). Each id is still written once (`capture_day` asserts it batch by batch), the
    day is exact, and the pairs stay within TWIN_SHARE of the run's requests."""
    with run_emulator(seed=54, generations_per_day=3000, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--rate-limit", "300", "--html-error-share", "0",
                                  "--throttle-share", "0.02"]) as server:
        ids, run = capture_day(server)
        truth = server.truth(yesterday())
    report = run.report
    assert ids == set(truth["ids"]) and report.complete, report.as_dict()
    assert report.learned_rps == pytest.approx(300)  # the budget and its window were learned ...
    assert 0 < report.twinned <= fetching.TWIN_SHARE * report.fetch_requests + 1  # ... and the last went in pairs
    assert report.hedged >= report.twinned and not report.missing_reasons
