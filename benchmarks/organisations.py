"""Whether each organisation still reaches its own rate limit when many are captured at once on one machine.

Starts --orgs emulators, one per organisation (its own --management-key, --seed and account --rate-limit), and
captures the same completed UTC day (yesterday) from each at the same time, each capture in its own OS process as
Dagster runs one run worker per organisation-day. Each goes through `record_day` into one shared private influxd, a
database `bench_<org>` per organisation, as in production. Then it captures the first organisation alone under the
same settings (a fresh emulator and database). The capture processes import and connect first and start together
on one signal, so the wall time is the captures' alone.

Per organisation: records/s (records fetched / fetch_seconds, the span from the first record request to the last
answer), its share of the limit, 429s met, account-wide pauses, the capture's wall and CPU seconds, peak RSS.
Totals: the wall time of all at once vs one alone, records/s over the machine, CPU seconds (user+sys) of the capture
processes (the capture alone, imports excluded), and separately of the emulators and influxd (psutil, from the start
signal to the end), peak RSS per capture process (max) and their sum, the load average. No assertions: figures for
the notes; a markdown table at the end for the docs.

    python -m benchmarks.organisations                                   # 10 x 50,000 at 200/s, 200 ms
    python -m benchmarks.organisations --orgs 2 --generations 2000       # a quick look
    python -m benchmarks.organisations --limit 500 --latency-ms 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import psutil

from benchmarks.capture_throughput import REPO_ROOT, emulator_args
from benchmarks.influx_write import peak_rss_mb

COLUMNS = ("organisation", "limit/s", "records", "complete", "records/s", "of limit", "429s", "pauses",
           "fetch s", "wall s", "CPU s", "peak RSS MiB")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def run_capture(job: dict[str, Any]) -> dict[str, Any]:
    """One organisation's day, in this process: set up, say `ready`, wait for `go` on stdin, capture."""
    from usage_pipeline.influx.settings import InfluxSettings
    from usage_pipeline.influx.store import InfluxStore
    from usage_pipeline.ledger import record_day
    from usage_pipeline.openrouter.settings import OpenRouterSettings

    day = dt.date.fromisoformat(job["day"])
    influx = InfluxSettings(url=job["influx_url"], database=job["database"])
    with InfluxStore(influx) as store:
        store.ensure_database()
    print("ready", flush=True)
    sys.stdin.readline()
    cpu_before, started = _own_cpu_s(), time.monotonic()
    recording = record_day(OpenRouterSettings(api_key=job["key"], base_url=job["url"]), influx, day)
    summary = recording.summary()
    return {"records": recording.recorded.written, "complete": recording.complete,
            "records_per_s": recording.records_per_second, "throttled": summary["throttled_429"],
            "pauses": summary["account_pauses"], "fetch_s": recording.fetch_seconds,
            "wall_s": time.monotonic() - started, "cpu_s": _own_cpu_s() - cpu_before,
            "startup_cpu_s": cpu_before, "peak_rss_mb": peak_rss_mb()}


def _cpu_of(processes: list[psutil.Process]) -> float:
    """User+sys seconds of these processes and their children so far (the ones that exited: not counted)."""
    total = 0.0
    for process in processes:
        for p in [process, *process.children(recursive=True)]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def _phase(orgs: list[str], args: argparse.Namespace, day: dt.date, influxd: psutil.Process | None,
           influx_url: str, tmp: Path, suffix: str = "") -> dict[str, Any]:
    """Capture `orgs` concurrently, each from its own emulator in its own process; their rows and the totals."""
    from openrouter_emulator.process import run_emulator

    with ExitStack() as stack:
        emulators = []
        for org in orgs:
            flags = ["--management-key", f"bench-key-{org}", *emulator_args(args.latency_ms, args.limit,
                                                                             args.html_error_share)]
            emulators.append(stack.enter_context(run_emulator(
                seed=1000 + int(org[3:]), generations_per_day=args.generations, days=1,
                log_path=tmp / f"emulator-{org}{suffix}.log", extra_args=flags)))
        for emulator in emulators:
            emulator.truth(day)  # build the day before the clock starts
            emulator.reset_stats()
        emulator_procs = [psutil.Process(e.pid) for e in emulators if e.pid is not None]
        children: list[tuple[subprocess.Popen[str], IO[str]]] = []
        for org, emulator in zip(orgs, emulators, strict=True):
            job = {"day": day.isoformat(), "key": emulator.management_key, "url": emulator.base_url,
                   "influx_url": influx_url, "database": f"bench_{org}{suffix}"}
            log: IO[str] = stack.enter_context(open(tmp / f"capture-{org}{suffix}.log", "w"))
            children.append((subprocess.Popen(
                [sys.executable, "-m", "benchmarks.organisations", "--capture", json.dumps(job)], cwd=REPO_ROOT,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True), log))
        for child, _ in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a capture process failed to start; see {tmp}")
        load_before = os.getloadavg()
        emulator_cpu, influx_cpu = _cpu_of(emulator_procs), _cpu_of([influxd] if influxd else [])
        started = time.monotonic()
        for child, _ in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        results = []
        for (child, log), org in zip(children, orgs, strict=True):
            assert child.stdout is not None
            out = child.stdout.read()
            if child.wait() != 0:
                raise RuntimeError(f"capture of {org} exited {child.returncode}; log {log.name}")
            results.append({"org": org + suffix.replace("_", " "), **json.loads(out.strip().splitlines()[-1])})
        wall = time.monotonic() - started
        emulator_cpu = _cpu_of(emulator_procs) - emulator_cpu
        influx_cpu = _cpu_of([influxd] if influxd else []) - influx_cpu
        emulator_rss = sum(p.memory_info().rss for p in emulator_procs) / 2**20
    return {"results": results, "wall_s": wall, "emulator_cpu_s": emulator_cpu, "influx_cpu_s": influx_cpu,
            "emulator_rss_mb": emulator_rss, "load": (load_before, os.getloadavg())}


def _row(r: dict[str, Any], limit: int) -> list[str]:
    share = f"{r['records_per_s'] / limit:.1%}" if limit else "-"
    return [r["org"], str(limit or "none"), f"{r['records']:,}", "yes" if r["complete"] else "NO",
            f"{r['records_per_s']:,.1f}", share, str(r["throttled"]), str(r["pauses"]), f"{r['fetch_s']:.1f}",
            f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}"]


def _totals(phase: dict[str, Any]) -> list[str]:
    results = phase["results"]
    rss = [r["peak_rss_mb"] for r in results]
    records = sum(r["records"] for r in results)
    load_before, load_after = phase["load"]
    return [f"{phase['wall_s']:.1f} s", f"{records / phase['wall_s']:,.0f}",
            f"{sum(r['cpu_s'] for r in results):.1f} s (+{sum(r['startup_cpu_s'] for r in results):.1f} s startup)",
            f"{phase['emulator_cpu_s']:.1f} s", f"{phase['influx_cpu_s']:.1f} s",
            f"{max(rss):.0f} MiB", f"{sum(rss):.0f} MiB", f"{phase['emulator_rss_mb']:.0f} MiB",
            f"{load_before[0]:.2f} -> {load_after[0]:.2f}"]


TOTAL_COLUMNS = ("run", "wall", "records/s (machine)", "capture CPU (user+sys)", "emulators CPU", "influxd CPU",
                 "peak RSS max", "peak RSS sum", "emulators RSS", "load 1 min")


def _print_table(header: tuple[str, ...], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in [list(header), *rows]:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=10, help="organisations captured at once")
    parser.add_argument("--generations", type=int, default=50_000, help="generations per organisation-day")
    parser.add_argument("--limit", type=int, default=200, help="each organisation's account requests/s; 0: none")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="median answer latency (lognormal)")
    parser.add_argument("--html-error-share", type=float, default=0.1, help="429s sent as a CDN's HTML page")
    parser.add_argument("--capture", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture:
        print(json.dumps(run_capture(json.loads(args.capture))))
        return
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    orgs = [f"org{i:02d}" for i in range(1, args.orgs + 1)]
    print(f"{args.orgs} organisations x {args.generations:,} generations of {day}, each from its own emulator "
          f"(limit {args.limit or 'none'} requests/s per account, latency {args.latency_ms:g} ms median) in its own "
          "process; record_day into one influxd, a database each; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    from usage_pipeline.influx.local_server import run_influxd

    with tempfile.TemporaryDirectory(prefix="bench-orgs-") as scratch, ExitStack() as stack:
        tmp = Path(scratch)
        server = stack.enter_context(run_influxd(tmp / "influxd", log_path=tmp / "influxd.log"))
        influxd = psutil.Process(server.process.pid) if server.process else None
        influx_url = server.url
        together = _phase(orgs, args, day, influxd, influx_url, tmp)
        print(f"{len(orgs)} at once: {together['wall_s']:.1f} s", flush=True)
        alone = _phase(orgs[:1], args, day, influxd, influx_url, tmp, suffix="_alone")
        print(f"{orgs[0]} alone: {alone['wall_s']:.1f} s", flush=True)
    rows = [_row(r, args.limit) for r in together["results"] + alone["results"]]
    totals = [[f"{len(orgs)} at once", *_totals(together)], ["1 alone", *_totals(alone)]]
    for markdown in (False, True):
        print()
        _print_table(COLUMNS, rows, markdown)
        print()
        _print_table(TOTAL_COLUMNS, totals, markdown)
    print("\nCPU: capture processes from the start signal to the end (their imports and setup as startup); the "
          "emulators' and influxd's measured apart with psutil over the same span, not included in capture CPU.")


if __name__ == "__main__":
    main()
