"""The organisation-day lock on both backends: lock files (one machine) and a real PostgreSQL's advisory locks
(any number of machines), each started here. One holder per organisation-day, a refusal naming the holder, a
waiter that gets the day when it is released, and a holder that dies (SIGKILL) freeing its day."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from usage_pipeline.day_lock import DayBusy, DayLockError, DayLocks, advisory_key
from usage_pipeline_tests.dagster_dev import free_port
from usage_pipeline_tests.postgres_server import run_postgres

DAY = dt.date(2026, 11, 21)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with run_postgres() as url:
        yield url


@pytest.fixture(params=["file", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The database URL of the backend under test (None: lock files in tmp_path)."""
    return str(request.getfixturevalue("postgres")) if request.param == "postgres" else None


def locks(tmp_path: Path, url: str | None, org: str = "acme") -> DayLocks:
    """A writer's own DayLocks: each call opens its own lock file or PostgreSQL session, as another process
    would."""
    return DayLocks(org, tmp_path / "day-locks", url)


class Waiting(logging.Handler):
    """Set when a writer says it waits for a day (the lock's log line)."""

    def __init__(self) -> None:
        super().__init__()
        self.said = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.said.set()


@contextmanager
def lock_log() -> Iterator[Waiting]:
    handler, logger = Waiting(), logging.getLogger("usage_pipeline.day_lock")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def waiting() -> Iterator[Waiting]:
    with lock_log() as handler:
        yield handler


def test_one_writer_per_organisation_day_and_a_refusal_names_the_holder(backend: str | None, tmp_path: Path) -> None:
    with locks(tmp_path, backend).hold(DAY, "nightly run 3f9a"):
        with pytest.raises(DayBusy) as busy, locks(tmp_path, backend).hold(DAY, "the push drain"):
            pytest.fail("two writers held one organisation-day")
        message = str(busy.value)
        assert message.startswith("organisation acme day 2026-11-21 is being written by nightly run 3f9a (pid ")
        assert "\n" not in message
        with locks(tmp_path, backend).hold(DAY + dt.timedelta(days=1), "the push drain"):  # another day is free
            pass
        with locks(tmp_path, backend, org="globex").hold(DAY, "the push drain"):  # another organisation's too
            pass
    with locks(tmp_path, backend).hold(DAY, "the push drain"):  # released
        pass


def test_a_waiting_writer_gets_the_day_once_it_is_released_and_gives_up_when_it_is_not(
        backend: str | None, tmp_path: Path, waiting: Waiting) -> None:
    got = threading.Event()

    def nightly() -> None:
        with locks(tmp_path, backend).hold(DAY, "nightly run 77aa", wait_s=120):
            got.set()

    holder = locks(tmp_path, backend).hold(DAY, "the push drain")
    holder.__enter__()
    with pytest.raises(DayBusy, match=r"is being written by the push drain .*still after waiting 0.2 s"):
        with locks(tmp_path, backend).hold(DAY, "nightly run 1", wait_s=0.2):
            pytest.fail("a held day was taken")
    waiting.said.clear()
    thread = threading.Thread(target=nightly, daemon=True)
    thread.start()
    assert waiting.said.wait(60), "the waiting writer never said it waits"
    assert not got.is_set(), "the day was taken while held"
    assert "organisation acme day 2026-11-21 is being written by the push drain" in waiting.lines[-1]
    holder.__exit__(None, None, None)
    thread.join(120)
    assert got.is_set()


HOLD = """
import datetime as dt, sys
from pathlib import Path
from usage_pipeline.day_lock import DayLocks
url = sys.argv[2] or None
with DayLocks("acme", Path(sys.argv[1]), url).hold(dt.date(2026, 11, 21), "a drain about to be killed"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_holder_killed_frees_its_day(backend: str | None, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "day-locks"), backend or ""],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(DayBusy, match=f"a drain about to be killed \\(pid {child.pid} on "):
            with locks(tmp_path, backend).hold(DAY, "the push drain"):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    deadline = time.monotonic() + 30  # PostgreSQL ends the session once it sees the socket closed
    while True:
        try:
            with locks(tmp_path, backend).hold(DAY, "the push drain"):
                break
        except DayBusy:
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            time.sleep(0.05)


def test_an_unreachable_postgresql_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://ledger:pw-MARKED-4c1e@127.0.0.1:{free_port()}/locks"
    with pytest.raises(DayLockError) as failed, locks(tmp_path, url).hold(DAY, "the push drain"):
        pytest.fail("held a lock of no server")
    message = str(failed.value)
    assert message.startswith("cannot reach PostgreSQL at USAGE_LOCK_DATABASE_URL: ") and "\n" not in message
    assert "MARKED" not in message and not isinstance(failed.value, DayBusy)


@pytest.mark.pure
def test_the_advisory_key_is_the_same_in_every_process() -> None:
    """Python's hash() of a string differs per process; the key must not, or two processes lock apart."""
    assert advisory_key("acme", DAY) == advisory_key("acme", dt.date(2026, 11, 21)) == 2109783002617802692
    assert advisory_key("globex", DAY) != advisory_key("acme", DAY) != advisory_key("acme", DAY.replace(day=22))
