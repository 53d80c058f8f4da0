"""The journal writer never dies silently: a delivery whose rows fail is refused alone and the writer goes on; a
journal that fails (another process holding its write lock past journal.WRITER_BUSY_S, a real fault) stops the
writer: every delivery gets 503 naming why, /health 503, and the `usage-pipeline receive` process exits 1 to be
restarted. SIGTERM exits within 5 s, answering what is in flight."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import requests
from aiohttp.test_utils import TestServer

from usage_pipeline.broadcast.journal import JournalRefused, JournalWriter
from usage_pipeline.broadcast.receiver import PATH, ReceiverSettings, receiver_app
from usage_pipeline.broadcast.spans import PushedSpan
from usage_pipeline_tests.push import HAIKU, TOKEN, Receiver, delivery, real, run_receiver
from usage_pipeline_tests.test_receiver import journaled

LOCKED = "OperationalError: database is locked"


@contextmanager
def write_lock(journal: Path) -> Iterator[sqlite3.Connection]:
    """Another process's exclusive hold on the journal's write lock, as a long-running sqlite3 shell would."""
    connection = sqlite3.connect(journal, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield connection
    finally:
        if connection.in_transaction:
            connection.rollback()
        connection.close()


def _span(gen_id: str, key_name: str = "fixture key") -> PushedSpan:
    return PushedSpan(gen_id, 1790606294000000000, key_name, "anthropic/claude-haiku-4.5", 0.005334, 2489, 569,
                      False)


def test_a_delivery_whose_rows_fail_is_refused_alone_and_the_writer_goes_on(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path / "journal.sqlite3", 15.0)
    answers: dict[str, BaseException | None] = {}
    answered = threading.Condition()

    def done(gen_id: str, then: Callable[[], None] | None = None) -> Callable[[BaseException | None], None]:
        def record(error: BaseException | None) -> None:
            if then is not None:
                then()
            with answered:
                answers[gen_id] = error
                answered.notify_all()
        return record

    # Past the receiver's checks (spans.py refuses it first): a name SQLite cannot encode, in one group with
    # good deliveries, queued from the first commit's answer so the writer takes them as one group.
    group = {"gen-1-good-a": _span("gen-1-good-a"), "gen-1-unencodable": _span("gen-1-unencodable", "k\ud800"),
             "gen-1-good-b": _span("gen-1-good-b")}

    def queue_the_group() -> None:
        for gen_id, span in group.items():
            writer.submit([span], time.time(), done(gen_id))

    writer.submit([_span("gen-1-first")], time.time(), done("gen-1-first", then=queue_the_group))
    with answered:
        assert answered.wait_for(lambda: len(answers) == 4, timeout=60), answers
    refused = answers.pop("gen-1-unencodable")
    assert isinstance(refused, JournalRefused) and "surrogates not allowed" in str(refused)
    assert answers == {"gen-1-first": None, "gen-1-good-a": None, "gen-1-good-b": None}
    writer.submit([_span("gen-1-later")], time.time(), done("gen-1-later"))
    with answered:
        assert answered.wait_for(lambda: "gen-1-later" in answers, timeout=60)
    writer.close()
    assert answers["gen-1-later"] is None and writer.stopped is None
    assert set(journaled(tmp_path / "journal.sqlite3")) == {"gen-1-first", "gen-1-good-a", "gen-1-good-b",
                                                             "gen-1-later"}


def test_a_writer_stopped_by_a_locked_journal_answers_everything_queued_and_everything_after(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    stops: list[str] = []
    writer = JournalWriter(journal, 15.0, on_stop=stops.append)
    answers: dict[str, tuple[str, BaseException | None]] = {}  # id -> (the thread that answered, the answer)
    answered = threading.Condition()

    def submit(gen_id: str) -> None:
        def done(error: BaseException | None) -> None:
            with answered:
                answers[gen_id] = (threading.current_thread().name, error)
                answered.notify_all()
        writer.submit([_span(gen_id)], time.time(), done)

    with write_lock(journal):
        submit("gen-1-taken")
        deadline = time.monotonic() + 60
        while not writer._queue.empty():  # taken: its commit now waits for the lock (WRITER_BUSY_S at most)
            assert time.monotonic() < deadline
        submit("gen-1-queued-behind-a")
        submit("gen-1-queued-behind-b")
        with answered:
            assert answered.wait_for(lambda: len(answers) == 3, timeout=60), answers
        submit("gen-1-after")  # answered at once, on the submitting thread
    writer.close()
    assert stops == [LOCKED] and writer.stopped == LOCKED
    assert {gen_id: (thread, type(error).__name__, str(error)) for gen_id, (thread, error) in answers.items()} == {
        gen_id: (thread, "JournalStopped", f"the journal writer stopped: {LOCKED}") for gen_id, thread in [
            ("gen-1-taken", "journal-writer"), ("gen-1-queued-behind-a", "journal-writer"),
            ("gen-1-queued-behind-b", "journal-writer"), ("gen-1-after", threading.current_thread().name)]}
    assert journaled(journal) == {}


def test_a_stopped_writer_answers_every_delivery_503_and_health_503_naming_why(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    stops: list[str] = []
    writer = JournalWriter(journal, 15.0, on_stop=stops.append)
    app = receiver_app(ReceiverSettings(token=TOKEN, journal_path=journal), writer)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> None:
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:  # never a hang
            async def post(gen_id: str) -> tuple[int, Any]:
                async with session.post(server.make_url(PATH), json=delivery(HAIKU, gen_id)) as answer:
                    return answer.status, await answer.json()

            assert await post("gen-1790000020-beforeTheLock00000") == (200, {})
            with write_lock(journal):
                answers = await asyncio.gather(*(post(f"gen-1790000020-whileLocked{n:06d}") for n in range(8)))
                assert [status for status, _ in answers] == [503] * 8, answers
                assert all(LOCKED in body["error"] for _, body in answers), answers
                async with session.get(server.make_url("/health")) as health:
                    assert health.status == 503
                    assert (await health.json())["journal_writer"] == f"stopped: {LOCKED}"
            # the lock is gone, but a stopped writer stays stopped: at once, until the process restarts
            status, body = await post("gen-1790000020-afterTheLock000000")
            assert (status, body["error"]) == (503, f"the journal writer stopped: {LOCKED}")

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
    assert stops == [LOCKED]
    assert set(journaled(journal)) == {"gen-1790000020-beforeTheLock00000"}


def _post_all(receiver: Receiver, ids: list[str]) -> list[Any]:
    """Each delivery's answer, or the ConnectionError of one sent after the process had gone."""
    def post(gen_id: str) -> Any:
        try:
            return receiver.post(delivery(HAIKU, gen_id))
        except requests.ConnectionError as exc:
            return exc

    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(post, ids))


def test_a_receiver_whose_journal_fails_answers_503_and_exits_to_be_restarted(tmp_path: Path) -> None:
    journal, log = tmp_path / "journal.sqlite3", tmp_path / "receiver.log"
    with run_receiver(journal, log) as receiver:
        assert receiver.post(real(HAIKU)).status_code == 200
        process = receiver.executor.process
        assert process is not None
        with write_lock(journal):
            answers = _post_all(receiver, [f"gen-1790000021-lockedJournal{n:06d}" for n in range(8)])
            assert process.wait(timeout=60) == 1
    refused = [a for a in answers if isinstance(a, requests.Response)]
    assert refused and all(a.status_code == 503 and LOCKED in a.json()["error"] for a in refused), answers
    assert all(isinstance(a, requests.Response | requests.ConnectionError) for a in answers)
    said = log.read_text()
    assert f"the journal writer stopped ({LOCKED}); exiting to be restarted" in said
    assert "Traceback" not in said and TOKEN not in said
    with run_receiver(journal, log) as restarted:  # what the supervisor does: it serves again, nothing lost
        assert restarted.post(delivery(HAIKU, "gen-1790000021-afterTheRestart00")).status_code == 200
    assert {"gen-1790606294-sdYHTGXUVyDKWCLqX5Op", "gen-1790000021-afterTheRestart00"} == set(journaled(journal))


def test_sigterm_exits_within_5_s_answering_every_delivery_in_flight(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    ids = [f"gen-1790000022-inFlightAtSigterm{n:03d}" for n in range(8)]
    with run_receiver(journal, tmp_path / "receiver.log") as receiver:
        assert receiver.post(real(HAIKU)).status_code == 200
        process = receiver.executor.process
        assert process is not None
        with write_lock(journal) as lock, ThreadPoolExecutor(len(ids)) as pool:
            posts = [pool.submit(receiver.post, delivery(HAIKU, gen_id)) for gen_id in ids]
            deadline = time.monotonic() + 60
            while (health := receiver.health())["journal_waiting"] < len(ids):  # all 8 in flight, none answered
                assert health["journal_writer"] == "running" and time.monotonic() < deadline, health
            process.send_signal(signal.SIGTERM)
            lock.rollback()  # the commit they wait for goes through (or the writer gave up on the lock: 503)
            process.wait(timeout=5)  # the contract
            answers = [post.result() for post in posts]
    assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
    acknowledged = {gen_id for gen_id, a in zip(ids, answers, strict=True) if a.status_code == 200}
    assert acknowledged <= set(journaled(journal))
