"""How fast a day is captured through `record_day` (into a private influxd), by limiter, latency and faults.

Each run starts its own emulator and influxd and captures one day in a fresh process (so its peak RSS is the
capture's alone). Prints one row per run: records/s (records fetched / fetch_seconds, the span from the first
record request to the last answer), its share of the limit, GET /generation requests per record (retries
spend the account's budget too), 429s, pauses, p50/p99 fetch time, peak in flight, peak RSS, and whether
the day is exact (complete, and points == distinct ids == the emulator's count). No assertions: figures
for the notes.

    python -m benchmarks.capture_throughput --fault-mix                       # each mix on each limiter
    python -m benchmarks.capture_throughput --repeat 5                        # issue 21's mix, each limiter
    python -m benchmarks.capture_throughput --mixes all --limiters token-bucket --sigma 1.2   # a heavier tail
    python -m benchmarks.capture_throughput --mixes none --limit 1000 --generations 1000000   # a big day
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from benchmarks.influx_write import peak_rss_mb

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITERS = ("fixed", "token-bucket", "sliding")
HANG_SHARE = 0.0005  # with latency: 0.05% of record fetches hang 20 s, as real ones sometimes do
HANG_SECONDS = 20
# The fault mixes (emulator flags), each on top of the latency, the hangs and the limit. "issue 21" is the mix
# its done-when names: 1% lone 429s and 5% first-fetch 404s (with the latency and hangs); "all" adds 0.5% 503s.
FAULT_MIXES: dict[str, list[str]] = {
    "none": [],
    "issue 21": ["--throttle-share", "0.01", "--first-404-share", "0.05"],
    "lone 429s 1%": ["--throttle-share", "0.01"],
    "503s 0.5%": ["--fault-rate", "0.005", "--fault-statuses", "503"],
    "first 404s 5%": ["--first-404-share", "0.05"],
    "all": ["--throttle-share", "0.01", "--fault-rate", "0.005", "--fault-statuses", "503",
            "--first-404-share", "0.05"],
}


def emulator_args(latency_ms: float, limit: float, html_share: float, faults: list[str] | None = None, *,
                  limiter: str = "fixed", sigma: float = 0.6) -> list[str]:
    """The emulator's flags for a world: latency (with the hangs), the account limit and its limiter, faults."""
    args = ["--analytics-rpm", "0"]  # the client paces analytics itself; the server need not refuse
    if latency_ms:
        args += ["--latency-ms", str(latency_ms), "--latency-sigma", str(sigma),
                 "--hang-share", str(HANG_SHARE), "--hang-seconds", str(HANG_SECONDS)]
    if limit:
        args += ["--rate-limit", str(limit), "--rate-limiter", limiter, "--html-error-share", str(html_share)]
    return args + list(faults or [])


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One capture, in this process (called through a subprocess by `main`)."""
    from openrouter_emulator.process import run_emulator
    from usage_pipeline.influx.local_server import run_influxd
    from usage_pipeline.influx.settings import InfluxSettings
    from usage_pipeline.influx.store import InfluxStore
    from usage_pipeline.ledger import record_day
    from usage_pipeline.openrouter.settings import OpenRouterSettings

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp, run_emulator(
            seed=cell["seed"], generations_per_day=cell["generations"], days=1, log_path=Path(tmp) / "emulator.log",
            extra_args=emulator_args(cell["latency_ms"], cell["limit"], cell["html_share"], FAULT_MIXES[cell["mix"]],
                                     limiter=cell["limiter"], sigma=cell["sigma"])) as emulator, \
            run_influxd(Path(tmp) / "influxd", log_path=Path(tmp) / "influxd.log") as influxd:
        expected = emulator.truth(day)["count"]
        emulator.reset_stats()
        influx = InfluxSettings(url=influxd.url, database="bench")
        with InfluxStore(influx) as store:
            store.ensure_database()
        settings = OpenRouterSettings(api_key=emulator.management_key, base_url=emulator.base_url)
        before = resource.getrusage(resource.RUSAGE_SELF)
        recording = record_day(settings, influx, day)
        after = resource.getrusage(resource.RUSAGE_SELF)
        with InfluxStore(influx) as store:
            counts = store.day_counts(day)
        stats = emulator.stats()
        emulator_cpu = sum(psutil.Process(emulator.pid).cpu_times()[:2])
    s = recording.summary()
    exact = recording.complete and counts.points == counts.distinct_ids == expected
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {**s, "exact": exact, "expected": expected, "gets": int(stats["by_path"].get("/generation", 0)),
            "peak_rss_mb": peak_rss_mb(), "cpu_s": round(cpu, 1), "emulator_cpu_s": round(emulator_cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="lognormal median of an answer")
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of the latency")
    parser.add_argument("--limit", type=int, default=500, help="account requests/s; 0: none")
    parser.add_argument("--limiters", nargs="*", default=list(LIMITERS), choices=LIMITERS)
    parser.add_argument("--html-error-share", type=float, default=0.1, help="limit 429s sent as a CDN's HTML page")
    parser.add_argument("--fault-mix", action="store_true", help="every mix of FAULT_MIXES (else: --mixes)")
    parser.add_argument("--mixes", nargs="*", default=["issue 21"], choices=list(FAULT_MIXES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (seeds 5, 6, ...); then their median")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    mixes = list(FAULT_MIXES) if args.fault_mix else args.mixes
    print(f"{args.generations:,} generations/day through record_day into influxd; latency lognormal median "
          f"{args.latency_ms:g} ms sigma {args.sigma:g}, {HANG_SHARE:.2%} of fetches hanging {HANG_SECONDS} s; limit "
          f"{args.limit}/s, {args.html_error_share:.0%} of its 429s as HTML pages; client defaults")
    print(" | ".join(("limiter", "faults", "records/s", "of limit", "GETs/record", "429s", "lone", "pauses",
                      "decreases", "p50 ms", "p99 ms", "in flight", "fetch s", "CPU s", "emulator CPU s", "peak RSS",
                      "exact")))
    for limiter in args.limiters:
        for mix in mixes:
            cell = {"generations": args.generations, "latency_ms": args.latency_ms, "sigma": args.sigma,
                    "limit": args.limit, "limiter": limiter, "html_share": args.html_error_share, "mix": mix}
            shares = [_run_and_print(limiter, mix, {**cell, "seed": 5 + n}) for n in range(args.repeat)]
            if args.repeat > 1 and args.limit:
                ordered = sorted(shares)
                print(f"  {limiter}, {mix}: {args.repeat} runs, median {statistics.median(ordered):.1%} of the limit, "
                      f"range {ordered[0]:.1%}-{ordered[-1]:.1%}", flush=True)


def _run_and_print(limiter: str, mix: str, cell: dict[str, Any]) -> float:
    """One run in its own process, printed as a row; its share of the limit (0 with no limit)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.capture_throughput", "--cell", json.dumps(cell)],
                          cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    limit = cell["limit"]
    share = r["records_per_second"] / limit if limit else 0.0
    print(" | ".join(str(v) for v in (
        limiter, mix, f"{r['records_per_second']:,.1f}", f"{share:.1%}" if limit else "-",
        f"{r['gets'] / max(1, r['fetched']):.3f}", r["throttled_429"], r["throttled_429_lone"], r["account_pauses"],
        r["rate_decreases"], r["fetch_p50_ms"], r["fetch_p99_ms"], r["peak_in_flight"], r["fetch_seconds"],
        r["cpu_s"], r["emulator_cpu_s"], f"{r['peak_rss_mb']:.0f} MiB",
        "yes" if r["exact"] else f"NO ({r['fetched']} of {r['expected']})")),
        flush=True)
    return share


if __name__ == "__main__":
    main()
