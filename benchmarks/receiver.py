"""The push path's figures: the receiver's throughput while the drain runs, and what a fully pushed day
then costs the nightly capture. Real processes on this machine's 2 cores (receiver, drain, emulator,
influxd and this load generator share them). No assertions: figures for the notes.

    python -m benchmarks.receiver --deliveries 20000 --concurrency 64
    python -m benchmarks.receiver --skip-load --day-size 100000

Part 1 posts real-shaped deliveries (the shared HAIKU delivery with emulator ids, serialized before the
clock starts) to `usage-pipeline receive` and times each answer; the receiver's CPU comes from psutil.
`usage-pipeline drain` runs beside it unless `--no-drain`. Part 2 replays a whole emulator day through the
emulator's own Broadcast pusher, drains it, runs `record_day` and counts its `GET /generation`s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.drain import drain_once
from usage_pipeline.day_lock import DayLocks
from usage_pipeline.influx.local_server import LocalInfluxd, run_influxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import record_day
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.organisations import DEFAULT_NAME
from usage_pipeline_tests.push import HAIKU, TOKEN, delivery, run_receiver


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """Post every body, `concurrency` at a time; each answer's seconds (a non-2xx raises)."""
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"receiver answered {answer.status}")
                latencies.append(time.perf_counter() - started)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load(server: EmulatorProcess, influx: LocalInfluxd, root: Path, deliveries: int, concurrency: int,
         drain: bool) -> None:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ids = server.truth(day)["ids"]
    bodies = [json.dumps(delivery(HAIKU, ids[n % len(ids)])).encode() for n in range(deliveries)]
    journal_path = root / f"load-{drain}.sqlite3"
    database = f"bench_load_{int(drain)}"
    env = {**os.environ, "OPENROUTER_API_KEY": server.management_key, "OPENROUTER_BASE_URL": server.base_url,
           "INFLUXDB_URL": influx.url, "INFLUXDB_DATABASE": database, "BROADCAST_JOURNAL_PATH": str(journal_path),
           "BROADCAST_DRAIN_LAG_S": "1"}
    with run_receiver(journal_path, root / "receiver.log", BROADCAST_DRAIN_LAG_S="1") as receiver:
        drain_log = root / f"drain-{drain}.log"
        with drain_log.open("wb") as log:
            drainer = subprocess.Popen([sys.executable, "-m", "usage_pipeline.cli", "drain", "--interval", "0.2"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT) if drain else None
        while drainer is not None and "draining" not in drain_log.read_text():  # up before the load starts
            time.sleep(0.1)
        try:
            assert receiver.executor.process is not None
            process = psutil.Process(receiver.executor.process.pid)
            before = process.cpu_times()
            started = time.perf_counter()
            latencies = asyncio.run(post_all(receiver.url, bodies, concurrency))
            seconds = time.perf_counter() - started
            after = process.cpu_times()
            commits = receiver.health()["journal_commits"]
        finally:
            if drainer is not None:
                drainer.terminate()
                drainer.wait(30)
    if drain:
        print(f"  drain said: {' | '.join(drain_log.read_text().strip().splitlines()[-3:])}", flush=True)
    with journal.connect(journal_path) as connection:
        drained = connection.execute("SELECT count(*) FROM pushed WHERE drained_at IS NOT NULL").fetchall()[0][0]
    cpu_ms = ((after.user - before.user) + (after.system - before.system)) * 1000 / deliveries
    print(f"receiver, drain {'on' if drain else 'off'}: {deliveries:,} deliveries ({min(deliveries, len(ids)):,} "
          f"unique ids) at concurrency {concurrency}: {deliveries / seconds:,.0f} deliveries/s, answer p50 "
          f"{percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
          f"receiver CPU {cpu_ms:.3f} ms/delivery, {commits:,} journal commits; {drained:,} ids drained meanwhile",
          flush=True)


def pushed_day(server: EmulatorProcess, influx: LocalInfluxd, root: Path) -> None:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    journal_path = root / "day.sqlite3"
    with run_receiver(journal_path, root / "receiver-day.log") as receiver:
        started = time.monotonic()
        counts = server.broadcast_day(day, receiver.url, token=TOKEN, concurrency=32, wait_s=3600)
        push_s = time.monotonic() - started
    print(f"pushed {counts['delivered']:,} of {counts['generations']:,} generations in {push_s:.1f} s", flush=True)
    store = InfluxStore(InfluxSettings(url=influx.url, database="bench_day"))
    store.ensure_database()
    settings = OpenRouterSettings(api_key=server.management_key, base_url=server.base_url)
    connection = journal.connect(journal_path)
    started = time.monotonic()
    locks = DayLocks.beside(journal_path, DEFAULT_NAME)
    while drain_once(settings, store.settings, connection, now=time.time() + 3600, locks=locks).due:
        pass
    drain_s = time.monotonic() - started
    gets = server.stats()["by_path"].get("/generation", 0)
    started = time.monotonic()
    nightly = record_day(settings, store.settings, day)
    nightly_s = time.monotonic() - started
    nightly_gets = server.stats()["by_path"].get("/generation", 0) - gets
    count = server.truth(day)["count"]
    print(f"drained into InfluxDB in {drain_s:.1f} s; nightly: complete={nightly.complete}, "
          f"reused {nightly.recorded.reused:,}, fetched {nightly.recorded.fetched:,}, "
          f"{nightly_gets:,} GET /generation = {nightly_gets / count:.2%} of the day's {count:,} ids, "
          f"{nightly.analytics_queries} analytics queries, {nightly_s:.1f} s", flush=True)
    connection.close()
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-drain", action="store_true", help="part 1 without the drain beside it only")
    parser.add_argument("--skip-load", action="store_true", help="only part 2")
    parser.add_argument("--skip-day", action="store_true", help="only part 1")
    parser.add_argument("--day-size", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"{psutil.cpu_count()} cores; receiver, drain, emulator, influxd and the load generator share them")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        with run_influxd(root / "influxd", log_path=root / "influxd.log") as influx, \
                run_emulator(seed=81, generations_per_day=args.day_size, days=1, log_path=root / "emu.log",
                             extra_args=["--analytics-rpm", "0"]) as server:
            if not args.skip_load:
                for drain in ([False] if args.no_drain else [True, False]):
                    load(server, influx, root, args.deliveries, args.concurrency, drain)
            if not args.skip_day:
                pushed_day(server, influx, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
