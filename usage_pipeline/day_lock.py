"""One writer per organisation-day: the push drain and the nightly capture never write the same day at once,
or two generations sharing a µs could be ranked from stale books onto one point (`ranks.place`).

InfluxDB-independent. With USAGE_LOCK_DATABASE_URL: a PostgreSQL session advisory lock keyed on a stable hash
of organisation and day (any number of machines). Without: a lock file per organisation-day in `day-locks/`
beside the push journal (one machine). A dead holder's lock goes with its session or flock. A holder leaves its
name (what, pid, host) where a refused writer reads it, so the refusal names it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors
from filelock import FileLock, Timeout

from usage_pipeline.settings import setting

log = logging.getLogger(__name__)

NIGHTLY_WAIT_S = 900.0  # a drain round (5,000 ids at most) holds a day for seconds: past this, something is stuck
LOCK_DIR = "day-locks"  # beside the push journal: <dir of BROADCAST_JOURNAL_PATH>/day-locks/<org>.<day>.lock
HOLDER = """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1"""


class DayLockError(RuntimeError):
    """The lock cannot be reached (PostgreSQL down, say). The message is one line."""


class DayBusy(DayLockError):
    """Another writer holds the organisation-day. The message names it."""


def advisory_key(org: str, day: dt.date) -> int:
    """A signed 64-bit key that every process computes alike (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(f"usage_pipeline day {org} {day.isoformat()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _LockFile:
    def __init__(self, path: Path, me: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)

        def sign(fd: int) -> None:  # filelock hands over the locked file: the holder's name goes in it
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)

        self.path, self.lock = path, FileLock(path, on_acquired=sign)

    def take(self, wait_s: float) -> bool:
        try:
            self.lock.acquire(timeout=wait_s)
        except Timeout:
            return False
        return True

    def holder(self) -> str:
        return self.path.read_text(errors="replace")[:200] or "another process"

    def close(self) -> None:
        if self.lock.is_locked:
            self.lock.release()


class _AdvisoryLock:
    def __init__(self, url: str, key: int, me: str) -> None:
        self.key = key
        try:  # the session's name is the holder's, for pg_stat_activity
            self.connection = psycopg2.connect(url, application_name=me[:63], connect_timeout=10)
        except psycopg2.Error as exc:
            reason, password = (str(exc).strip().splitlines() or [type(exc).__name__])[0], urlsplit(url).password
            raise DayLockError(f"cannot reach PostgreSQL at USAGE_LOCK_DATABASE_URL: "
                               f"{reason.replace(password, '***') if password else reason}") from None
        self.connection.autocommit = True

    def take(self, wait_s: float) -> bool:
        with self.connection.cursor() as cursor:
            if not wait_s:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                row = cursor.fetchone()
                return row is not None and bool(row[0])
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, round(wait_s * 1000))}ms",))
            try:
                cursor.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            except psycopg2.errors.LockNotAvailable:
                return False
            return True

    def holder(self) -> str:
        with self.connection.cursor() as cursor:
            cursor.execute(HOLDER, ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF))
            found = cursor.fetchone()
        return str(found[0]) if found and found[0] else "another PostgreSQL session"

    def close(self) -> None:
        self.connection.close()  # the session ends, and its advisory locks with it


@dataclass(frozen=True)
class DayLocks:
    """The day locks of one organisation: PostgreSQL's when `database_url` is set, else lock files in `directory`."""

    org: str
    directory: Path
    database_url: str | None = None

    @classmethod
    def beside(cls, journal_path: Path, org: str) -> DayLocks:
        """As deployed: USAGE_LOCK_DATABASE_URL's, else files in `day-locks/` beside the journal."""
        return cls(org, journal_path.parent / LOCK_DIR, setting("USAGE_LOCK_DATABASE_URL"))

    @contextmanager
    def hold(self, day: dt.date, holder: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the organisation-day's lock, waiting `wait_s` at most (0: one try); else DayBusy naming the holder."""
        what, me = f"organisation {self.org} day {day}", f"{holder} (pid {os.getpid()} on {socket.gethostname()})"
        lock = (_AdvisoryLock(self.database_url, advisory_key(self.org, day), me) if self.database_url
                else _LockFile(self.directory / f"{self.org}.{day.isoformat()}.lock", me))
        try:
            if not lock.take(0.0):
                if wait_s:
                    log.warning("%s is being written by %s: waiting up to %g s", what, lock.holder(), wait_s)
                if not wait_s or not lock.take(wait_s):
                    raise DayBusy(f"{what} is being written by {lock.holder()}" + (
                        f"; still after waiting {wait_s:g} s" if wait_s else ""))
            yield
        finally:
            lock.close()
