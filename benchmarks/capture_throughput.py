"""How fast a day is captured against the emulator, by added latency, account rate limit and fault mix.

Each cell starts its own emulator and captures one day in a fresh process (so its peak RSS is the
capture's alone), consuming the batches without writing them, or with `--ledger` through the real daily
path (`record_day` into a private influxd). Prints one row per cell: records/s (records fetched /
fetch_seconds, the span from the first record request to the last answer), its share of the limit, the
GET /generation requests per record (retries spend the account's budget too), 429s and how many paused
everything, p50/p99 fetch time, peak in flight, peak RSS. No assertions: figures for the notes.

    python -m benchmarks.capture_throughput                      # the 2 x 2 matrix, 20,000 generations
    python -m benchmarks.capture_throughput --fault-mix          # 200 ms, hangs, 500/s: each fault, then all
    python -m benchmarks.capture_throughput --fault-mix --mixes all --ledger   # the full mix via record_day
    python -m benchmarks.capture_throughput --fault-mix --mixes all --ledger --repeat 8   # runs vary: its spread
    python -m benchmarks.capture_throughput --latency-ms 200 --limit 1000 --generations 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
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
# The fault mixes of --fault-mix (emulator flags), each on top of 200 ms latency, hangs and the 500/s limit.
FAULT_MIXES: dict[str, list[str]] = {
    "none": [],
    "lone 429s 1%": ["--throttle-share", "0.01"],
    "503s 0.5%": ["--fault-rate", "0.005", "--fault-statuses", "503"],
    "first 404s 5%": ["--first-404-share", "0.05"],
    "all": ["--throttle-share", "0.01", "--fault-rate", "0.005", "--fault-statuses", "503",
            "--first-404-share", "0.05"],
}


def emulator_args(latency_ms: float, limit: int, html_share: float, faults: list[str] | None = None) -> list[str]:
    args = ["--analytics-rpm", "0"]  # the client paces analytics itself; the server need not refuse
    if latency_ms:
        args += ["--latency-ms", str(latency_ms), "--hang-share", str(HANG_SHARE),
                 "--hang-seconds", str(HANG_SECONDS)]
    if limit:
        args += ["--rate-limit", str(limit), "--html-error-share", str(html_share)]
    return args + list(faults or [])


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One capture, in this process (called through a subprocess by `main`)."""
    from openrouter_emulator.process import run_emulator
    from usage_pipeline.openrouter.client import OpenRouterClient
    from usage_pipeline.openrouter.settings import OpenRouterSettings

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    flags = emulator_args(cell["latency_ms"], cell["limit"], cell["html_share"], cell["faults"])
    with tempfile.TemporaryDirectory() as tmp, run_emulator(
            seed=5, generations_per_day=cell["generations"], days=1, log_path=Path(tmp) / "emulator.log",
            extra_args=flags) as emulator:
        emulator.truth(day)  # build the day before the clock starts
        emulator.reset_stats()
        settings = OpenRouterSettings(api_key=emulator.management_key, base_url=emulator.base_url)
        with OpenRouterClient(settings) as client:
            if cell["ledger"]:
                report, records, extra = _through_ledger(client, day, Path(tmp))
            else:
                report, records, extra = _batches_only(client, day)
        stats = emulator.stats()
    gets = int(stats["by_path"].get("/generation", 0))
    return {"records": records, "complete": report.complete, "records_per_s": report.records_per_second,
            "fetch_seconds": report.fetch_seconds, "requests": report.fetch_requests, "gets": gets,
            "throttled": report.throttled, "lone": report.throttled_lone, "pauses": report.account_pauses,
            "paused_s": report.paused_s, "learned_rps": report.learned_rps, "hedged": report.hedged,
            "p50_ms": report.fetch_p50_ms, "p99_ms": report.fetch_p99_ms, "peak_in_flight": report.peak_in_flight,
            "elapsed_s": report.elapsed_s, "missing": len(report.missing),
            "emulator_ok_per_s": stats["ok_per_second"], "peak_rss_mb": peak_rss_mb(), **extra}


def _batches_only(client: Any, day: dt.date) -> tuple[Any, int, dict[str, Any]]:
    from usage_pipeline.openrouter.capture import DayCapture

    capture = DayCapture(client, day)
    records = sum(len(batch) for batch in capture.batches())
    return capture.report, records, {}


def _through_ledger(client: Any, day: dt.date, root: Path) -> tuple[Any, int, dict[str, Any]]:
    from usage_pipeline.influx.local_server import run_influxd
    from usage_pipeline.influx.settings import InfluxSettings
    from usage_pipeline.influx.store import InfluxStore
    from usage_pipeline.ledger import record_day

    with run_influxd(root / "influxd", log_path=root / "influxd.log") as influxd, \
            InfluxStore(InfluxSettings(url=influxd.url, database="bench")) as store:
        store.ensure_database()
        recording = record_day(client, store, day)
        counts = store.day_counts(day)
    summary = recording.summary()
    return recording.capture, recording.written, {
        "ledger_complete": recording.complete, "points": counts.points, "distinct_ids": counts.distinct_ids,
        "write_s": summary["influx_write_seconds"], "read_s": summary["influx_read_seconds"]}


def _cells(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    base = {"generations": args.generations, "html_share": args.html_error_share, "ledger": args.ledger}
    if args.fault_mix:
        return [(name, {**base, "latency_ms": 200.0, "limit": 500, "faults": FAULT_MIXES[name]})
                for name in args.mixes]
    return [("none", {**base, "latency_ms": latency, "limit": limit, "faults": []})
            for latency in args.latency_ms for limit in args.limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, nargs="*", default=[0, 200])
    parser.add_argument("--limit", type=int, nargs="*", default=[0, 500], help="account requests/s; 0: none")
    parser.add_argument("--html-error-share", type=float, default=0.1, help="429s sent as a CDN's HTML page")
    parser.add_argument("--fault-mix", action="store_true", help="rows of FAULT_MIXES at 200 ms, hangs, 500/s")
    parser.add_argument("--mixes", nargs="*", default=list(FAULT_MIXES), choices=list(FAULT_MIXES))
    parser.add_argument("--ledger", action="store_true", help="through record_day into a private influxd")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; then a line with their median and range")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    print(f"{args.generations:,} generations/day; latency = lognormal median (sigma 0.6) plus {HANG_SHARE:.2%} of "
          f"fetches hanging {HANG_SECONDS} s; limit = account-wide requests/s, fixed 1 s windows, "
          f"{args.html_error_share:.0%} of limit 429s as HTML pages; client defaults (ceiling 512); "
          f"{'record_day into influxd' if args.ledger else 'batches consumed, not written'}")
    header = ("faults", "latency", "limit", "records/s", "of limit", "GETs/record", "429s", "lone", "pauses",
              "paused s", "learned/s", "hedged", "p50 ms", "p99 ms", "in flight", "fetch s", "peak RSS")
    print(" | ".join(header))
    for name, cell in _cells(args):
        shares = [_run_and_print(name, cell, args.generations) for _ in range(args.repeat)]
        if args.repeat > 1 and cell["limit"]:
            ordered = sorted(shares)
            print(f"  {name}: {args.repeat} runs, median {statistics.median(ordered):.1%} of the limit, "
                  f"range {ordered[0]:.1%}-{ordered[-1]:.1%}, {sum(s >= 0.9 for s in ordered)} at 90% or more")


def _run_and_print(name: str, cell: dict[str, Any], generations: int) -> float:
    """One run of a cell in its own process, printed as a row; its share of the limit (0 with no limit)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "benchmarks.capture_throughput", "--cell", json.dumps(cell)],
                          cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    limit = cell["limit"]
    share = f"{r['records_per_s'] / limit:.1%}" if limit else "-"
    print(" | ".join(str(v) for v in (
        name, f"{cell['latency_ms']:g} ms", limit or "none", f"{r['records_per_s']:,.1f}", share,
        f"{r['gets'] / max(1, r['records']):.3f}", r["throttled"], r["lone"], r["pauses"], r["paused_s"],
        r["learned_rps"], r["hedged"], r["p50_ms"], r["p99_ms"], r["peak_in_flight"], r["fetch_seconds"],
        f"{r['peak_rss_mb']:.0f} MiB")), flush=True)
    if cell["ledger"]:
        print(f"  record_day: complete={r['ledger_complete']} written={r['records']} points={r['points']} "
              f"distinct ids={r['distinct_ids']} influx write {r['write_s']} s, read {r['read_s']} s, "
              f"elapsed {r['elapsed_s']} s")
    if not r["complete"] or r["records"] != generations:
        print(f"  INCOMPLETE: {r['records']} records of {generations}, {r['missing']} missing "
              f"({time.monotonic() - started:.0f} s)")
    return r["records_per_s"] / limit if limit else 0.0


if __name__ == "__main__":
    main()
