"""Throughput of the ledger's InfluxDB writes and the memory profile of streaming a day back.

Run from the repository root: `python -m benchmarks.influx_write [--points 200000] [--url URL]`.
Without --url it starts a private influxd. Writes go as the ledger sends them: one `write_generations`
call per time-contiguous window of at most --window generations (shuffled inside, as fetched). Each round
measures, on a fresh database each: the server alone (POST of prebuilt lines, same batches) and end to end
(Generation objects -> lines -> POST); rounds alternate their order, and the ratio is the median of the
rounds' ratios, so drift and other load on the machine weigh on both sides alike. Building lines alone is
timed per round too. The read side runs in a fresh subprocess so its peak RSS measures streaming alone;
two days of different sizes show whether memory grows with the point count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from usage_pipeline.influx.local_server import run_influxd
from usage_pipeline.influx.points import encode
from usage_pipeline.influx.ranks import place
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.influx.upserts import WRITE_BATCH_SIZE
from usage_pipeline.openrouter.generation import Generation

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = [f"vendor{v}/model-{m}" for v in range(4) for m in range(3)]
PROVIDERS: list[str | None] = ["OpenAI", "Anthropic", "Together", None]


def peak_rss_mb() -> float:
    """This process's RSS high-water mark. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec,
    so a child started by a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_generations(count: int, day: dt.date, seed: int) -> list[Generation]:
    """`count` realistic generations spread over one UTC day (some share a µs, as in real traffic)."""
    rng = random.Random(seed)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    out: list[Generation] = []
    for i in range(count):
        micros = rng.randrange(86_400 * 10**6) if i % 50 else 43_200 * 10**6  # 2% pile onto noon
        tokens = rng.randrange(10, 8000)
        out.append(
            Generation(
                id=f"gen-{seed}-{i:08d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
                created_at=start + dt.timedelta(microseconds=micros),
                model=rng.choice(MODELS),
                provider_name=rng.choice(PROVIDERS),
                api_key=f"key-{rng.randrange(20)}",
                total_cost=tokens * 1.5e-6,
                usage=tokens * 1.5e-6,
                upstream_inference_cost=None,
                cache_discount=rng.choice([None, 0.0001]),
                tokens_prompt=tokens,
                tokens_completion=rng.randrange(1, 2000),
                native_tokens_prompt=tokens,
                native_tokens_completion=rng.randrange(1, 2000),
                native_tokens_reasoning=0,
                native_tokens_cached=None,
                latency=rng.uniform(100, 5000),
                generation_time=rng.uniform(100, 5000),
                moderation_latency=None,
                finish_reason="stop",
                native_finish_reason="stop",
                streamed=True,
                cancelled=False,
                is_byok=False,
                api_type="completions",
                app_id=rng.choice([None, 42]),
                origin="https://example.test",
                external_user=None,
                request_id=f"req-{i}",
                session_id=None,
                upstream_id=f"up-{i}",
            )
        )
    return out


def stream_day(url: str, database: str, day: dt.date, chunk_size: int) -> dict[str, Any]:
    """The read side, meant to run in its own process: seconds, rows, frames and peak RSS."""
    store = InfluxStore(InfluxSettings(url=url, database=database))
    baseline = peak_rss_mb()
    started = time.perf_counter()
    rows = frames = 0
    for frame in store.iter_day_frames(day, chunk_size=chunk_size):
        rows += len(frame)
        frames += 1
    store.close()
    return {
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "frames": frames,
        "rss_before_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
    }


def stream_in_subprocess(url: str, database: str, day: dt.date, chunk_size: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.influx_write", "--stream-only", "--url", url, "--database", database,
           "--day", day.isoformat(), "--chunk-size", str(chunk_size)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def day_windows(generations: list[Generation], window: int, seed: int) -> list[list[Generation]]:
    """Time-contiguous windows of at most ~`window` generations (a µs is never split, as ranks need),
    each shuffled: the ledger's write calls."""
    ordered = sorted(generations, key=lambda g: g.created_at)
    rng = random.Random(seed)
    windows: list[list[Generation]] = []
    start = 0
    while start < len(ordered):
        end = min(start + window, len(ordered))
        while end < len(ordered) and ordered[end].created_at == ordered[end - 1].created_at:
            end += 1
        chunk = ordered[start:end]
        rng.shuffle(chunk)
        windows.append(chunk)
        start = end
    return windows


def fresh_store(url: str) -> InfluxStore:
    store = InfluxStore(InfluxSettings(url=url, database=f"bench_{uuid.uuid4().hex[:8]}"))
    store.ensure_database()
    return store


def timed_write(url: str, day: dt.date, expected: int, write: Any) -> float:
    """Seconds `write(store)` takes on a fresh database, checked to hold `expected` points, then dropped."""
    store = fresh_store(url)
    try:
        started = time.perf_counter()
        write(store)
        seconds = time.perf_counter() - started
        counts = store.day_counts(day)
        if counts.points != expected or counts.distinct_ids != expected:
            raise RuntimeError(f"expected {expected} points on {day}, found {counts}")
        return seconds
    finally:
        store.query(f'DROP DATABASE "{store.settings.database}"')
        store.close()


def measure_writes(url: str, count: int, day: dt.date, window: int, batch_size: int, rounds: int) -> None:
    windows = day_windows(make_generations(count, day, seed=1), window, seed=1)
    print(f"{count:,} points on {day} in {len(windows)} write calls of <= {window:,} generations, "
          f"POSTs of <= {batch_size:,} lines, {rounds} rounds")

    def server_alone(store: InfluxStore) -> None:
        for lines in prebuilt:
            for start in range(0, len(lines), batch_size):
                store.write_lines(lines[start : start + batch_size])

    def end_to_end(store: InfluxStore) -> None:
        for generations in windows:
            store.write_generations(generations)

    build, server, e2e, ratios = [], [], [], []
    for round_no in range(rounds):
        started = time.perf_counter()
        prebuilt = [encode(generations, place(generations, []).ranks).lines for generations in windows]
        build.append(count / (time.perf_counter() - started))
        order = [("server", server_alone), ("e2e", end_to_end)]
        rates = {name: count / timed_write(url, day, count, write) for name, write in order[:: 1 - 2 * (round_no % 2)]}
        server.append(rates["server"])
        e2e.append(rates["e2e"])
        ratios.append(rates["e2e"] / rates["server"])
        print(f"  round {round_no + 1}: build lines {build[-1]:,.0f}/s, server alone {server[-1]:,.0f}/s, "
              f"end to end {e2e[-1]:,.0f}/s ({ratios[-1]:.0%})")
    median = statistics.median
    print(f"build lines alone (Generation -> line protocol): {median(build):>9,.0f} points/s")
    print(f"server alone (POST of prebuilt lines):           {median(server):>9,.0f} points/s")
    print(f"end to end (Generation -> lines -> POST):        {median(e2e):>9,.0f} points/s")
    print(f"end to end / server alone:                       {median(ratios):>9.0%} (median of the rounds' ratios)")


def run(url: str, points: int, window: int, batch_size: int, rounds: int, chunk_size: int) -> None:
    big_day, small_day = dt.date(2025, 6, 1), dt.date(2025, 6, 2)
    with InfluxStore(InfluxSettings(url=url)) as store:
        print(f"influxd {store.ping()} at {url}")
    measure_writes(url, points, big_day, window, batch_size, rounds)
    with fresh_store(url) as store:  # the days the read side streams
        database = store.settings.database
        for day, count, seed in ((big_day, points, 1), (small_day, points // 4, 2)):
            for generations in day_windows(make_generations(count, day, seed), window, seed):
                store.write_generations(generations)
        for day in (small_day, big_day):
            r = stream_in_subprocess(url, database, day, chunk_size)
            growth = r["peak_rss_mb"] - r["rss_before_mb"]
            print(f"stream {day}: {r['rows']} rows in {r['frames']} frames (chunk {chunk_size}) in {r['seconds']:.2f}s "
                  f"= {r['rows'] / r['seconds']:,.0f} rows/s; peak RSS {r['peak_rss_mb']:.0f} MiB "
                  f"(after imports {r['rss_before_mb']:.0f} MiB, growth {growth:.0f} MiB)")
        store.query(f'DROP DATABASE "{database}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=10_000, help="generations per write_generations call")
    parser.add_argument("--batch-size", type=int, default=WRITE_BATCH_SIZE, help="lines per POST")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--url", help="a running InfluxDB 1.x (default: start a private influxd)")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--day", type=dt.date.fromisoformat)
    parser.add_argument("--stream-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_only:
        print(json.dumps(stream_day(args.url, args.database, args.day, args.chunk_size)))
    elif args.url:
        run(args.url, args.points, args.window, args.batch_size, args.rounds, args.chunk_size)
    else:
        with run_influxd() as server:
            run(server.url, args.points, args.window, args.batch_size, args.rounds, args.chunk_size)


if __name__ == "__main__":
    main()
