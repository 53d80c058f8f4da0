"""The push path end to end over real HTTP: the emulator's Broadcast deliveries (drops, duplicates,
reordering, error spans, gzip) -> `usage-pipeline receive` -> the journal -> the drain -> influxd; then the
nightly capture, which lands on the very points push wrote and fetches only what push missed."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.coverage import push_coverage
from usage_pipeline.broadcast.drain import drain_once
from usage_pipeline.day_lock import DayLocks
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import record_day
from usage_pipeline.organisations import DEFAULT_NAME
from usage_pipeline.reconcile import no_duplicates
from usage_pipeline_tests.conftest import settings_for, yesterday
from usage_pipeline_tests.push import TOKEN, run_receiver
from usage_pipeline_tests.test_ledger_rerun import generation_gets, points

HOSTILE_PUSH: dict[str, Any] = {"drop_share": 0.1, "duplicate_share": 0.1, "reorder_window": 64, "delay_ms": 20,
                                "error_span_share": 0.02, "gzip_share": 0.3, "string_ints_share": 0.3,
                                "mismatch_share": 0.01, "concurrency": 16}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with run_emulator(seed=61, generations_per_day=1200, days=1, log_path=tmp_path_factory.mktemp("emu") / "emu.log",
                      extra_args=["--analytics-rpm", "0"]) as emulator:
        yield emulator


def drain_all(server: EmulatorProcess, store: InfluxStore, journal_path: Path) -> list[Any]:
    """Drain rounds until nothing is due, as if the 404 lag had passed."""
    connection = journal.connect(journal_path)
    reports = []
    try:
        while (report := drain_once(settings_for(server), store.settings, connection, now=time.time() + 3600,
                                    locks=DayLocks.beside(journal_path, DEFAULT_NAME))).due:
            reports.append(report)
            assert not report.postponed, report.postponed
    finally:
        connection.close()
    return reports


def test_pushed_records_are_the_points_the_nightly_keeps_and_it_fetches_only_what_push_missed(
        server: EmulatorProcess, store: InfluxStore, tmp_path: Path) -> None:
    day = yesterday()
    truth = server.truth(day)
    with run_receiver(tmp_path / "journal.sqlite3", tmp_path / "receiver.log") as receiver:
        counts = server.broadcast_day(day, receiver.url, token=TOKEN, **HOSTILE_PUSH)
    delivered, dropped = set(counts["delivered_ids"]), set(counts["dropped_ids"])
    assert counts["duplicated"] > 0 and counts["error_spans"] > 0 and dropped and not counts["failed"]
    assert delivered | dropped == set(truth["ids"]) and not delivered & dropped
    assert set(journal.day_ids(journal.connect(receiver.journal), day)) == delivered

    reports = drain_all(server, store, receiver.journal)
    assert sum(r.written for r in reports) == len(delivered) and store.day_ids(day) == delivered
    pushed_points = points(store, day)

    gets_before = generation_gets(server)
    nightly = record_day(settings_for(server), store.settings, day)
    assert nightly.complete and nightly.recorded.reused == len(delivered)
    assert nightly.recorded.fetched == len(dropped) == generation_gets(server) - gets_before
    after = points(store, day)
    assert {t: p for t, p in after.items() if p[0] in delivered} == pushed_points  # same times, same tags
    assert store.day_counts(day) == DayCounts(truth["count"], truth["count"]) and no_duplicates(store, day).passed

    coverage = push_coverage(receiver.journal, day, lambda: store.day_ids(day))
    assert coverage["push_missed"] == len(dropped) and set(coverage["push_missed_ids"]) <= dropped
    assert coverage["push_coverage"] == pytest.approx(len(delivered) / truth["count"], abs=1e-6)
    assert coverage["push_differs"] == len(set(counts["mismatched_ids"]) & delivered) > 0


def test_a_receiver_killed_mid_load_lost_no_id_it_answered_2xx(
        server: EmulatorProcess, store: InfluxStore, tmp_path: Path) -> None:
    """SIGKILL while 32 deliveries are in flight: every id whose delivery got a 2xx is journaled, and after a
    restart and a drain it is in the ledger."""
    day = yesterday()
    journal_path = tmp_path / "journal.sqlite3"
    found: dict[str, Any] = {}
    with run_receiver(journal_path, tmp_path / "receiver.log") as receiver:
        pushing = threading.Thread(target=lambda: found.update(
            server.broadcast_day(day, receiver.url, token=TOKEN, concurrency=32)))
        pushing.start()
        while not journal_path.exists() or _rows(journal_path) < 300:
            time.sleep(0.01)
        receiver.executor.kill(sig=signal.SIGKILL)
        pushing.join()
    delivered = set(found["delivered_ids"])
    # 300 ids were journaled at the kill; the answers of up to 32 in flight may have been cut (CI saw 299)
    assert 300 - 32 <= len(delivered) < len(found["sent_ids"]) and found["connection_errors"] > 0
    with run_receiver(journal_path, tmp_path / "receiver-restarted.log") as restarted:
        assert restarted.health()["deliveries"] == 0  # a new process: what it holds came through the fsync
    assert delivered <= set(journal.day_ids(journal.connect(journal_path), day))
    drain_all(server, store, journal_path)
    assert delivered <= store.day_ids(day) and no_duplicates(store, day).passed


def _rows(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as connection:
            return int(connection.execute("SELECT count(*) FROM pushed").fetchall()[0][0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
