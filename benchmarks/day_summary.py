"""Benchmark: summarize a 1,000,000-generation day from 10,000-row chunks, then publish 30 such days.

Prints seconds and memory so the in-memory aggregation and the copy-on-publish design can be judged
on numbers; asserts nothing. Run: `python benchmarks/day_summary.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import resource
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psutil

from usage_pipeline.defs.resources import DailyUsageDatabase
from usage_pipeline.duck import (
    CaptureStatus,
    DaySummary,
    publish,
    replace_day,
    store_path_for,
    summarize_day,
)

ROWS = 1_000_000
CHUNK_ROWS = 10_000
DAYS = 30
DAY = dt.date(2025, 3, 1)
MODELS = [f"vendor-{i % 12}/model-{i}" for i in range(60)]
PROVIDERS = [f"Provider{i}" for i in range(15)] + [None]
API_KEYS = [f"sk-or-v1-{i:04d}" for i in range(40)] + [None]
USERS = [f"user-{i:05d}@example.org" for i in range(2_000)] + [None]


def chunks(day: dt.date, rows: int, size: int, seed: int = 0) -> Iterator[pd.DataFrame]:
    """Synthetic ledger chunks shaped like InfluxDB's, generated lazily so only one is alive at a time."""
    rng = np.random.default_rng(seed)
    start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()) * 10**9
    for offset in range(0, rows, size):
        n = min(size, rows - offset)

        def pick(values: Sequence[str | None], n: int = n) -> np.ndarray:
            return np.array(values, dtype=object)[rng.integers(0, len(values), n)]

        yield pd.DataFrame(
            {
                "time": np.sort(rng.integers(start, start + 86_400 * 10**9, n)),
                "model": pick(MODELS),
                "provider": pick(PROVIDERS),
                "generation_id": [f"gen-{offset + i:010d}-abcdefghij" for i in range(n)],
                "total_cost": rng.random(n) / 100,
                "usage": rng.random(n) / 100,
                "upstream_inference_cost": rng.random(n) / 100,
                "latency": rng.integers(50, 5_000, n).astype(float),
                "generation_time": rng.integers(10, 4_000, n).astype(float),
                "tokens_prompt": rng.integers(1, 5_000, n),
                "tokens_completion": rng.integers(1, 2_000, n),
                "native_tokens_prompt": rng.integers(1, 5_000, n),
                "native_tokens_completion": rng.integers(1, 2_000, n),
                "native_tokens_reasoning": rng.integers(0, 800, n),
                "native_tokens_cached": rng.integers(0, 3_000, n),
                "finish_reason": pick(["stop", "length"]),
                "api_type": pick(["completions"]),
                "external_user": pick(USERS),
                "api_key": pick(API_KEYS),
                "request_id": [f"req-{offset + i}" for i in range(n)],
                "streamed": rng.random(n) < 0.7,
                "cancelled": rng.random(n) < 0.01,
                "is_byok": rng.random(n) < 0.05,
            }
        )


class PeakRss:
    """Samples this process's RSS every 5 ms; `resource` alone only gives the lifetime maximum."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def shifted(summary: DaySummary, day: dt.date) -> DaySummary:
    """The same rows moved to another day: 30 heavy days without 30 aggregations."""
    tables = {name: frame.assign(day=pd.Timestamp(day)) for name, frame in summary.tables.items()}
    return dataclasses.replace(summary, day=day, tables=tables)


def main() -> None:
    capture = CaptureStatus(api_requests=ROWS, api_cost=None, status="complete")

    started = time.perf_counter()
    for _ in chunks(DAY, ROWS, CHUNK_ROWS):
        pass
    generating = time.perf_counter() - started

    with PeakRss() as rss:
        started = time.perf_counter()
        summary = summarize_day(DAY, chunks(DAY, ROWS, CHUNK_ROWS), capture)
        summarizing = time.perf_counter() - started
    print(f"summarize_day: {ROWS:,} rows in {CHUNK_ROWS:,}-row chunks")
    print(f"  wall {summarizing:.2f} s (of which generating the synthetic chunks ~{generating:.2f} s)")
    print(f"  RSS baseline {mib(rss.baseline)}, peak {mib(rss.peak)} (+{mib(rss.peak - rss.baseline)})")
    print(f"  ru_maxrss (process lifetime) {mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    print("  rows per table: " + ", ".join(f"{name}={len(frame):,}" for name, frame in summary.tables.items()))

    with tempfile.TemporaryDirectory() as folder:
        published = Path(folder) / "usage.duckdb"
        store = store_path_for(published)
        started = time.perf_counter()
        with duckdb.connect(str(store)) as conn:
            for offset in range(DAYS):
                replace_day(conn, shifted(summary, DAY + dt.timedelta(days=offset)))
            filled = time.perf_counter() - started
            report = publish(conn, published)
            rows = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in summary.tables)
        print(f"store: {DAYS} days, {rows:,} summary rows, replace_day {filled / DAYS * 1000:.0f} ms/day")
        print(f"publish: {report.seconds:.3f} s, {mib(report.bytes)} ({report.bytes:,} bytes)")
        day = DAY + dt.timedelta(days=DAYS)
        started = time.perf_counter()
        with DailyUsageDatabase(path=str(published)).store_connection() as conn:  # as the daily_usage asset does
            replace_day(conn, shifted(summary, day))
            report = publish(conn, published)
        print(f"day {DAYS + 1} as the asset stores it (lock, connect, replace, publish): "
              f"{time.perf_counter() - started:.3f} s, of which publish {report.seconds:.3f} s, {mib(report.bytes)}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
