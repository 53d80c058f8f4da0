"""The capture against the emulator's fault knobs over real HTTP, into a real influxd: a window is fetched whole
then written, lone 429s and lone 5xx cost their own request a retry and pause nothing, first-fetch 404s are
waited out, and every limiter of the account is met at its pace; every day ends exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from openrouter_emulator.limiters import LIMITER_KINDS
from openrouter_emulator.process import run_emulator
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.influx.upserts import LedgerDatabase
from usage_pipeline_tests.conftest import capture, yesterday


def test_a_window_is_fetched_whole_then_written_once(
        tmp_path: Path, store: InfluxStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """One window of 400 ids, a fifth of them 404 on their first fetch: the window is written once, with all
    400 records, after the last of them arrived; one slot is never exceeded."""
    writes: list[int] = []
    upsert = LedgerDatabase.upsert

    async def spied(self: LedgerDatabase, records, stored, bodies=None):
        writes.append(len(records))
        return await upsert(self, records, stored, bodies)

    monkeypatch.setattr(LedgerDatabase, "upsert", spied)
    with run_emulator(seed=51, generations_per_day=400, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--first-404-share", "0.2"]) as server:
        recording = capture(server, store, settings={"max_concurrency": 1})
        truth, stats = server.truth(yesterday()), server.stats()
    assert store.day_ids(yesterday()) == set(truth["ids"]) and recording.complete
    assert writes == [400] and recording.listing.windows_queried == 1
    assert stats["first_404s"] >= 40 and recording.fetcher.figures.retries == stats["first_404s"]
    assert stats["max_in_flight"] == 1


def test_lone_429s_delay_only_their_own_request(tmp_path: Path, store: InfluxStore) -> None:
    """2% of record fetches answer 429 with Retry-After: 1 and no rate-limit header: each is retried after
    its own second; nothing pauses every request or cuts the rate, and none costs a record."""
    with run_emulator(seed=52, generations_per_day=1500, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--throttle-share", "0.02"]) as server:
        recording = capture(server, store)
        truth, stats = server.truth(yesterday()), server.stats()
    pace = recording.fetcher.source.pace.figures
    assert store.day_ids(yesterday()) == set(truth["ids"]) and recording.complete, recording.summary()
    assert stats["throttled"] > 10 and pace.throttled == pace.throttled_lone == stats["throttled"]
    assert pace.account_pauses == 0 and pace.paused_s == 0 and pace.decreases == 0
    assert not recording.recorded.missing


def test_lone_5xx_are_retried_and_the_day_is_exact(tmp_path: Path, store: InfluxStore) -> None:
    with run_emulator(seed=53, generations_per_day=1500, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--fault-rate", "0.01", "--fault-statuses", "503"]) as server:
        recording = capture(server, store)
        truth, stats = server.truth(yesterday()), server.stats()
    assert store.day_ids(yesterday()) == set(truth["ids"]) and recording.complete
    assert stats["random_faults"] > 5 and recording.fetcher.figures.retries >= stats["random_faults"]
    assert recording.fetcher.source.pace.figures.account_pauses == 0


@pytest.mark.parametrize("limiter", LIMITER_KINDS)
def test_every_kind_of_account_limiter_is_met_at_its_pace_and_the_day_is_exact(
        tmp_path: Path, store: InfluxStore, limiter: str) -> None:
    """A 300/s account budget behind fixed windows, a token bucket or a sliding log, with 2% lone 429s: the
    pace learns none of them by name, yet every 429 is honoured (the account's pause, a lone one's own wait),
    the day is exact, and refusals stay a small share of the requests."""
    with run_emulator(seed=54, generations_per_day=1500, days=1, log_path=tmp_path / "emu.log",
                      extra_args=["--analytics-rpm", "0", "--rate-limit", "300", "--rate-limiter", limiter,
                                  "--html-error-share", "0", "--throttle-share", "0.02"]) as server:
        recording = capture(server, store)
        truth, stats = server.truth(yesterday()), server.stats()
    pace = recording.fetcher.source.pace
    assert store.day_ids(yesterday()) == set(truth["ids"]) and recording.complete, recording.summary()
    assert stats["rate_limited"] > 0 and pace.figures.account_pauses > 0 and pace.figures.decreases > 0
    assert stats["rate_limited"] < 0.25 * recording.fetcher.figures.requests
    assert not recording.recorded.missing
