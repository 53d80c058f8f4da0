"""The drain and the nightly capture never write one organisation-day at once (real emulator, real influxd,
the real daily_ledger job, the real journal and day locks).

The harm the lock prevents, forced by ordering on events, never by timing: the emulator's twins are two
generations sharing model, provider and µs, ranked 0 and 1 by id. Push announced only the second. The drain
reads the stored points (none), places it at rank 0 and writes; a relay in front of influxd holds that write.
Meanwhile the nightly runs. Unlocked, it reads the same empty book, writes the first twin at rank 0 and the
second at rank 1, and then the drain's held write lands on rank 0: the first twin is lost and the second is
stored twice. Locked, the nightly waits for the day (its log line is the event that opens the relay), then
reads the drain's point and ranks around it."""

from __future__ import annotations

import datetime as dt
import http.client
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.drain import HELD_DAY_RETRY_S, DrainReport, drain_once
from usage_pipeline.broadcast.spans import PushedSpan
from usage_pipeline.day_lock import DayLocks
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.organisations import DEFAULT_NAME
from usage_pipeline.reconcile import no_duplicates
from usage_pipeline_tests.conftest import capture, settings_for, yesterday
from usage_pipeline_tests.test_day_lock import lock_log
from usage_pipeline_tests.test_journal_prune import journal_spans, span
from usage_pipeline_tests.test_ledger_rerun import points
from usage_pipeline_tests.test_pipeline import Ledger, checks


class Gate:
    """A loopback relay to influxd that holds every POST /write until `opened` is set."""

    def __init__(self, upstream: str) -> None:
        self.held, self.opened = threading.Event(), threading.Event()
        target, gate = urlsplit(upstream), self

        class Relay(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and self.path.startswith("/write"):
                    gate.held.set()
                    gate.opened.wait(300)
                server = http.client.HTTPConnection(target.hostname or "", target.port, timeout=300)
                server.request(self.command, self.path, body=body, headers={
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")})
                answer = server.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                server.close()

            do_GET = do_POST = _relay

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ledger(emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger of its own (database, DuckDB file, Dagster instance) whose push journal is
    tmp_path/broadcast.sqlite3."""
    built = Ledger(emulator, influxd, tmp_path)
    built.store.ensure_database()  # the drain may write before the nightly's asset makes it
    yield built
    built.store.query(f'DROP DATABASE "{built.database}"')
    built.store.close()


def twins(emulator: EmulatorProcess, influxd: LocalInfluxd, day: dt.date) -> dict[str, int]:
    """The second of each pair of twins -> the start of its µs (ns), from a capture into a scratch database."""
    scratch = InfluxStore(InfluxSettings(url=influxd.url, database=f"scratch_{uuid.uuid4().hex[:8]}"))
    scratch.ensure_database()
    try:
        assert capture(emulator, scratch, day).complete
        at = points(scratch, day)
    finally:
        scratch.query(f'DROP DATABASE "{scratch.settings.database}"')
        scratch.close()
    return {gen_id: t - 1 for t, (gen_id, _, _) in at.items() if t % 1000 == 1}


def test_a_drain_and_the_nightly_of_one_day_at_once_leave_it_exact(
        emulator: EmulatorProcess, influxd: LocalInfluxd, ledger: Ledger, tmp_path: Path) -> None:
    day = yesterday()
    truth, seconds = emulator.truth(day), twins(emulator, influxd, day)
    assert seconds, "the emulator's day has twins"
    path = tmp_path / "broadcast.sqlite3"
    journal_spans(path, [PushedSpan(gen_id, start_ns, None, None, None, None, None, False)
                         for gen_id, start_ns in seconds.items()], time.time(), lag_s=0.0)

    gate, found = Gate(influxd.url), dict[str, DrainReport]()
    gated = InfluxSettings(url=gate.url, database=ledger.database, timeout_s=300)
    connection = journal.connect(path)

    def drain() -> None:
        found["drain"] = drain_once(settings_for(emulator), gated, connection, now=time.time(),
                                    locks=DayLocks.beside(path, DEFAULT_NAME))

    def open_when_the_nightly_waits() -> None:
        if waiting.said.wait(600):
            gate.opened.set()

    draining = threading.Thread(target=drain)
    with lock_log() as waiting:
        draining.start()
        try:
            assert gate.held.wait(120), "the drain never wrote"  # it has read the stored points: none
            threading.Thread(target=open_when_the_nightly_waits, daemon=True).start()
            nightly = ledger.run(day)  # the daily_ledger job: the asset, its checks, the summary
            gate.opened.set()  # (unlocked, the nightly has run to its end meanwhile)
            waiting.said.set()
            draining.join(300)
        finally:
            gate.close()
    report = found["drain"]
    assert report.written == len(seconds) and not report.deferred and not report.postponed
    assert nightly.success and all(checks(nightly).values())

    after = ledger.verify_only(day)  # the checks again, on what both left
    assert all(checks(after).values()), checks(after)
    assert ledger.store.day_counts(day) == DayCounts(truth["count"], truth["count"])
    assert ledger.store.day_ids(day) == set(truth["ids"]) and no_duplicates(ledger.store, day).passed
    assert "is being written by the push drain" in waiting.lines[0]  # the nightly waited for the drain's round


def test_the_drain_leaves_a_day_the_nightly_holds_and_goes_on_with_the_others(
        emulator: EmulatorProcess, store: InfluxStore, tmp_path: Path) -> None:
    day, other = yesterday(), yesterday() - dt.timedelta(days=1)
    ids = {d: emulator.truth(d)["ids"][:30] for d in (day, other)}
    path = tmp_path / "broadcast.sqlite3"
    journal_spans(path, [span(gen_id, d, i) for d, some in ids.items() for i, gen_id in enumerate(some)],
                  time.time(), lag_s=0.0)
    connection, locks = journal.connect(path), DayLocks.beside(path, DEFAULT_NAME)

    with DayLocks.beside(path, DEFAULT_NAME).hold(day, "nightly run 5e1d"):  # the nightly, capturing `day`
        first = drain_once(settings_for(emulator), store.settings, connection, now=time.time(), locks=locks)
    assert first.written == len(ids[other]) and store.day_ids(other) == set(ids[other])
    assert set(first.deferred) == set(ids[day]) and not store.day_ids(day)
    assert all(why.startswith(f"waiting: organisation default day {day} is being written by nightly run 5e1d")
               for why in first.deferred.values())
    assert drain_once(settings_for(emulator), store.settings, connection, now=time.time(), locks=locks).due == 0

    later = drain_once(settings_for(emulator), store.settings, connection, now=time.time() + HELD_DAY_RETRY_S,
                       locks=locks)
    assert later.written == len(ids[day]) and not later.deferred and store.day_ids(day) == set(ids[day])
