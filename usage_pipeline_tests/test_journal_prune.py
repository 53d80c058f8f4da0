"""The push journal stays small: the nightly notes each day its checks proved exact, and the drain deletes the
drained ids of those days once they are older than BROADCAST_JOURNAL_RETENTION_DAYS. Undrained ids and days
not proven stay, whatever their age."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.coverage import prove_day
from usage_pipeline.broadcast.journal import JournalWriter
from usage_pipeline.broadcast.spans import PushedSpan
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.test_pipeline import Ledger, checks

US_PER_DAY = 86_400_000_000


def span(gen_id: str, day: dt.date, i: int) -> PushedSpan:
    """A root span of `day`, `i` ms after midnight, with the figures a real one carries."""
    start_ns = (int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000 + i) * 1_000_000
    return PushedSpan(gen_id, start_ns, "prod-key-3", "anthropic/claude-haiku-4.5", 0.000123, 812, 96, False)


def journal_spans(path: Path, spans: Sequence[PushedSpan], received_at: float, lag_s: float = 15.0) -> None:
    """Journal each span as its own delivery through the receiver's writer; return once all are durable."""
    writer = JournalWriter(path, lag_s)
    errors: list[BaseException | None] = []
    durable = threading.Event()

    def done(error: BaseException | None) -> None:
        errors.append(error)
        if len(errors) == len(spans):
            durable.set()

    for one in spans:
        writer.submit([one], received_at, done)
    assert not spans or durable.wait(120), f"{len(errors)} of {len(spans)} deliveries answered"
    writer.close()
    assert errors == [None] * len(spans)


def journaled_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM pushed")}


@pytest.mark.pure
def test_prune_deletes_only_the_drained_ids_of_proven_days_past_the_retention(tmp_path: Path) -> None:
    today, path = dt.date(2026, 12, 10), tmp_path / "broadcast.sqlite3"
    days = {"old": today - dt.timedelta(days=10), "unproven": today - dt.timedelta(days=9),
            "eighth": today - dt.timedelta(days=8), "kept": today - dt.timedelta(days=7)}
    sizes = {"old": 2 * journal.PRUNE_BATCH + 7, "unproven": 5, "eighth": 5, "kept": 5}
    spans = {name: [span(f"gen-{name}-{i}", days[name], i) for i in range(sizes[name])] for name in days}
    waiting = span("gen-old-not-drained", days["old"], 99_999)
    journal_spans(path, [s for group in spans.values() for s in group] + [waiting], time.time())
    connection = journal.connect(path)
    journal.mark_drained(connection, {s.id: None for group in spans.values() for s in group}, time.time())
    for name in ("old", "eighth", "kept"):
        prove_day(path, days[name])  # what the nightly's passing full-capture check does

    assert journal.prune(connection, today, 7) == sizes["old"] + sizes["eighth"]  # in batches, all of them
    assert journaled_ids(path) == {waiting.id} | {s.id for s in spans["unproven"] + spans["kept"]}
    assert journal.prune(connection, today, 7) == 0
    assert journal.prune(connection, today, 6) == sizes["kept"]  # a shorter retention reaches the seventh day
    connection.close()


def test_the_nightly_proves_its_day_and_the_drain_prunes_it(emulator: EmulatorProcess, influxd: LocalInfluxd,
                                                            tmp_path: Path) -> None:
    """The real nightly (the daily_ledger job) proves yesterday, not the day whose checks fail; then a real
    `usage-pipeline drain` with a retention of 0 days drains both days' pushed ids and prunes yesterday's."""
    ledger = Ledger(emulator, influxd, tmp_path)
    path, day, unproven = tmp_path / "broadcast.sqlite3", yesterday(), yesterday() - dt.timedelta(days=1)
    journal.connect(path).close()  # push is set up: the journal exists
    proven_run, failed_checks = ledger.run(day), ledger.verify_only(unproven)
    assert proven_run.success and all(checks(proven_run).values())
    assert not checks(failed_checks)["full_capture_matches_openrouter"]
    with sqlite3.connect(path) as connection:
        assert [row[0] for row in connection.execute("SELECT day FROM proven_days")] == [day.isoformat()]

    pushed = {d: emulator.truth(d)["ids"][:40] for d in (day, unproven)}
    journal_spans(path, [span(gen_id, d, i) for d, ids in pushed.items() for i, gen_id in enumerate(ids)],
                  time.time(), lag_s=0.0)
    not_due = span("gen-not-due-yet", day, 50_000)
    journal_spans(path, [not_due], time.time(), lag_s=10 * 86_400.0)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "INFLUXDB_", "BROADCAST_",
                                                                       "USAGE_"))},
           "OPENROUTER_API_KEY": emulator.management_key, "OPENROUTER_BASE_URL": emulator.base_url,
           "INFLUXDB_URL": influxd.url, "INFLUXDB_DATABASE": ledger.database, "BROADCAST_JOURNAL_PATH": str(path),
           "BROADCAST_JOURNAL_RETENTION_DAYS": "0"}
    log_path = tmp_path / "drain.log"
    with log_path.open("wb") as log:
        drain = subprocess.Popen([sys.executable, "-m", "usage_pipeline.cli", "drain", "--interval", "0.2"],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "pruned" not in log_path.read_text() and drain.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        drain.terminate()
        drain.wait(30)
    said = log_path.read_text()
    assert "pruned 40 drained ids of proven days older than 0 days" in said, said
    assert journaled_ids(path) == {not_due.id} | set(pushed[unproven])  # not drained, or not proven
    assert set(pushed[unproven]) <= ledger.store.day_ids(unproven) and "Traceback" not in said


def test_a_bad_retention_stops_the_drain_in_one_line(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "INFLUXDB_", "USAGE_"))},
           "OPENROUTER_API_KEY": "sk-or-v1-unused", "INFLUXDB_URL": "http://127.0.0.1:9",
           "BROADCAST_JOURNAL_PATH": str(tmp_path / "broadcast.sqlite3"), "BROADCAST_JOURNAL_RETENTION_DAYS": "a week"}
    done = subprocess.run([sys.executable, "-m", "usage_pipeline.cli", "drain"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("usage-pipeline drain: BROADCAST_JOURNAL_RETENTION_DAYS must be a whole number of days, "
                           "got 'a week'\n")
