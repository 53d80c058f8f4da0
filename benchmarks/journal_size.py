"""How big the push journal gets, and stays, for a 100,000-generation/day organisation: each simulated day's
ids go in through the receiver's own writer (`JournalWriter`, one delivery per id), the drain's own journal
calls mark them drained (`journal.due`, `journal.mark_drained`: the fetching is not what is measured here),
the nightly proves the day (`journal.prove_day`), and the drain's prune runs (`journal.prune`). Printed per
day: the file before and after pruning, and the pages in use (SQLite reuses freed pages rather than shrinking
the file). No assertions: figures for the notes.

    python -m benchmarks.journal_size
    python -m benchmarks.journal_size --per-day 100000 --days 14 --retention-days 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.drain import DRAIN_BATCH
from usage_pipeline.broadcast.journal import JournalWriter
from usage_pipeline.broadcast.spans import PushedSpan

FIRST_DAY = dt.date(2026, 11, 1)
KEYS = ("team-search-prod", "team-support-prod", "batch-eval", "notebook-alice", "ci-smoke")
MODELS = ("anthropic/claude-haiku-4.5", "openai/gpt-5.1-codex-mini", "deepseek/deepseek-v4-flash")


def midnight(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def receive_day(writer: JournalWriter, day: dt.date, per_day: int) -> float:
    """Journal the day's ids as the receiver does, one delivery each; seconds until all were durable."""
    left, durable, started = [per_day], threading.Event(), time.perf_counter()

    def done(error: BaseException | None) -> None:
        assert error is None, error
        left[0] -= 1
        if not left[0]:
            durable.set()

    start = midnight(day)
    for i in range(per_day):
        at = start + i * 86_400 / per_day
        span = PushedSpan(f"gen-{int(at)}-{i:08d}{day:%m%d}AbCdEfGh", int(at * 1e9), KEYS[i % len(KEYS)],
                          MODELS[i % len(MODELS)], 0.000_123 * (1 + i % 97), 800 + i % 4000, 40 + i % 900, False)
        writer.submit([span], at, done)
    durable.wait()
    return time.perf_counter() - started


def drain_day(connection: sqlite3.Connection, day: dt.date) -> None:
    now = midnight(day + dt.timedelta(days=1))
    while rows := journal.due(connection, now, DRAIN_BATCH):
        journal.mark_drained(connection, {row.id: None for row in rows}, now)


def size(connection: sqlite3.Connection, path: Path) -> tuple[int, float, float]:
    """Rows, the file's MB (after a WAL checkpoint) and the MB of pages in use."""
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, free, page = (connection.execute(f"PRAGMA {name}").fetchall()[0][0]
                         for name in ("page_count", "freelist_count", "page_size"))
    rows = connection.execute("SELECT count(*) FROM pushed").fetchall()[0][0]
    return rows, path.stat().st_size / 1e6, (pages - free) * page / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-day", type=int, default=100_000, help="generations a day")
    parser.add_argument("--days", type=int, default=14, help="simulated days")
    parser.add_argument("--retention-days", type=int, default=7, help="BROADCAST_JOURNAL_RETENTION_DAYS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "broadcast.sqlite3"
        writer, connection = JournalWriter(path, 15.0), journal.connect(path)
        print(f"{args.per_day:,} ids/day, retention {args.retention_days} days; MB = file (pages in use)")
        for k in range(args.days):
            day = FIRST_DAY + dt.timedelta(days=k)
            seconds = receive_day(writer, day, args.per_day)
            drain_day(connection, day)
            journal.prove_day(connection, day, midnight(day + dt.timedelta(days=1)) + 7_200)  # the 02:00 run
            rows, file_mb, used_mb = size(connection, path)
            started = time.perf_counter()
            pruned = journal.prune(connection, day + dt.timedelta(days=1), args.retention_days)
            prune_s = time.perf_counter() - started
            after_rows, after_mb, after_used = size(connection, path)
            print(f"day {k + 1:2d} {day}: journaled in {seconds:5.1f} s; before pruning {rows:>9,} ids "
                  f"{file_mb:6.1f} MB ({used_mb:6.1f}); pruned {pruned:>7,} in {prune_s:4.2f} s; after "
                  f"{after_rows:>9,} ids {after_mb:6.1f} MB ({after_used:6.1f}); "
                  f"{after_used * 1e6 / max(after_rows, 1):.0f} B/id", flush=True)
        writer.close()
        connection.close()


if __name__ == "__main__":
    main()
