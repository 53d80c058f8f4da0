"""How fast a day is captured against the emulator, by added latency and account rate limit.

Each cell starts its own emulator and captures one day in a fresh process (so its peak RSS is the
capture's alone), consuming the batches without writing them. Prints one row per cell: records/s, the
share of the limit reached, 429s received, p50/p99 fetch time, the emulator's own served rate, peak RSS.
No assertions: figures for the notes.

    python -m benchmarks.capture_throughput                      # the 2 x 2 matrix, 20,000 generations
    python -m benchmarks.capture_throughput --latency-ms 200 --limit 1000 --generations 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.influx_write import peak_rss_mb

REPO_ROOT = Path(__file__).resolve().parents[1]
HANG_SHARE = 0.0005  # with latency: 0.05% of record fetches hang 20 s, as real ones sometimes do
HANG_SECONDS = 20


def emulator_args(latency_ms: float, limit: int, html_share: float) -> list[str]:
    args = ["--analytics-rpm", "0"]  # the client paces analytics itself; the server need not refuse
    if latency_ms:
        args += ["--latency-ms", str(latency_ms), "--hang-share", str(HANG_SHARE),
                 "--hang-seconds", str(HANG_SECONDS)]
    if limit:
        args += ["--rate-limit", str(limit), "--html-error-share", str(html_share)]
    return args


def run_cell(generations: int, latency_ms: float, limit: int, html_share: float) -> dict[str, Any]:
    """One capture, in this process (called through a subprocess by `main`)."""
    from openrouter_emulator.process import run_emulator
    from usage_pipeline.openrouter.capture import DayCapture
    from usage_pipeline.openrouter.client import OpenRouterClient
    from usage_pipeline.openrouter.settings import OpenRouterSettings

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp, run_emulator(
            seed=5, generations_per_day=generations, days=1, log_path=Path(tmp) / "emulator.log",
            extra_args=emulator_args(latency_ms, limit, html_share)) as emulator:
        emulator.truth(day)  # build the day before the clock starts
        emulator.reset_stats()
        records = 0
        settings = OpenRouterSettings(api_key=emulator.management_key, base_url=emulator.base_url)
        with OpenRouterClient(settings) as client:
            capture = DayCapture(client, day)
            for batch in capture.batches():
                records += len(batch)
        stats = emulator.stats()
    report = capture.report
    return {"records": records, "complete": report.complete, "records_per_s": report.records_per_second,
            "fetch_seconds": report.fetch_seconds, "requests": report.fetch_requests, "throttled": report.throttled,
            "hedged": report.hedged, "p50_ms": report.fetch_p50_ms, "p99_ms": report.fetch_p99_ms,
            "peak_in_flight": report.peak_in_flight, "elapsed_s": report.elapsed_s,
            "emulator_ok_per_s": stats["ok_per_second"], "emulator_served_per_s": stats["served_per_second"],
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generations", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, nargs="*", default=[0, 200])
    parser.add_argument("--limit", type=int, nargs="*", default=[0, 500], help="account requests/s; 0: none")
    parser.add_argument("--html-error-share", type=float, default=0.1, help="429s sent as a CDN's HTML page")
    parser.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(args.generations, args.latency_ms[0], args.limit[0], args.html_error_share)))
        return
    print(f"{args.generations:,} generations/day; latency = lognormal median (sigma 0.6) plus {HANG_SHARE:.2%} of "
          f"fetches hanging {HANG_SECONDS} s; limit = account-wide requests/s, fixed 1 s windows, "
          f"{args.html_error_share:.0%} of 429s as HTML pages; client defaults (ceiling 512)")
    header = ("latency", "limit", "records/s", "of limit", "429s", "429 share", "hedged", "p50 ms", "p99 ms",
              "in flight", "emu ok/s", "peak RSS")
    print(" | ".join(header))
    for latency in args.latency_ms:
        for limit in args.limit:
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.capture_throughput", "--cell", "--generations",
                 str(args.generations), "--latency-ms", str(latency), "--limit", str(limit),
                 "--html-error-share", str(args.html_error_share)],
                cwd=REPO_ROOT, check=True, capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            share = f"{r['records_per_s'] / limit:.0%}" if limit else "-"
            print(" | ".join(str(v) for v in (
                f"{latency:g} ms", limit or "none", f"{r['records_per_s']:,.0f}", share, r["throttled"],
                f"{r['throttled'] / max(1, r['requests']):.1%}", r["hedged"], r["p50_ms"], r["p99_ms"],
                r["peak_in_flight"], f"{r['emulator_ok_per_s']:,.0f}", f"{r['peak_rss_mb']:.0f} MiB")), flush=True)
            if not r["complete"] or r["records"] != args.generations:
                print(f"  INCOMPLETE: {r['records']} records of {args.generations} "
                      f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
