"""One emulated day through the real job: emulator -> client -> influxd -> checks -> DuckDB.

Prints the seconds of each part, the capture report's counts and this process's peak RSS (the emulator
and influxd run in their own processes and are not counted). No assertions: figures for the notes.

    python -m benchmarks.day_end_to_end --generations 50000
    python -m benchmarks.day_end_to_end --generations 20000 --latency-ms 200 --limit 500   # the hard API
    python -m benchmarks.day_end_to_end --generations 20000 --latency-ms 200 --limit 500 --faults all   # + faults
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.capture_throughput import FAULT_MIXES, emulator_args
from benchmarks.influx_write import peak_rss_mb
from openrouter_emulator.process import run_emulator
from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.organisations import default_instance
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OpenRouterResource
from usage_pipeline.influx.local_server import run_influxd
from usage_pipeline.organisations import DEFAULT_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generations", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=0, help="median added latency (with 0.05%% hangs)")
    parser.add_argument("--limit", type=int, default=0, help="account-wide requests/s; 0: none")
    parser.add_argument("--html-error-share", type=float, default=0.1)
    parser.add_argument("--faults", default="none", choices=list(FAULT_MIXES),
                        help="a fault mix of capture_throughput (lone 429s, 503s, first-fetch 404s)")
    parser.add_argument("--limiter", default="fixed", choices=["fixed", "token-bucket", "sliding"])
    args = parser.parse_args()
    hostile = emulator_args(args.latency_ms, args.limit, args.html_error_share, FAULT_MIXES[args.faults],
                            limiter=args.limiter)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        with run_emulator(generations_per_day=args.generations, days=1, log_path=root / "emulator.log",
                          extra_args=hostile) as emulator, \
                run_influxd(root / "influxd", log_path=root / "influxd.log") as influxd:
            started = time.monotonic() - t0
            defs = build_defs({
                "openrouter": OpenRouterResource(api_key=emulator.management_key, base_url=emulator.base_url),
                "influxdb": InfluxDBResource(url=influxd.url, database="bench"),
                "usage_db": DailyUsageDatabase(path=str(root / "usage.duckdb")),
            })
            t1 = time.monotonic()
            result = defs.resolve_job_def("daily_ledger").execute_in_process(
                partition_key=OrgDay(DEFAULT_NAME, day).key, instance=default_instance(), raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
            job_seconds = time.monotonic() - t1
            stats = emulator.stats()
    steps = {e.step_key: e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    materialized = result.asset_materializations_for_node("influxdb__generations")[0].metadata
    meta: dict[str, Any] = {k: v.value for k, v in materialized.items()}
    meta |= meta.pop("details")  # every figure the capture measured, beside the ones the asset page charts
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    print(f"day {day}: {args.generations} generations/day emulated; emulator flags: {' '.join(hostile)}")
    print(f"servers started in {started:.1f} s (emulator + influxd)")
    print(f"job daily_ledger: {'success' if result.success else 'FAILED'} in {job_seconds:.1f} s end to end")
    for key, event in steps.items():
        print(f"  step {key}: {event.step_success_data.duration_ms / 1000:.2f} s")
    print("capture:", {k: meta[k] for k in ("enumerated", "fetched", "written", "duplicates_skipped", "missing",
                                            "windows", "windows_split", "analytics_queries", "retries",
                                            "throttled_429", "timed_out_attempts", "records_per_second",
                                            "peak_in_flight", "fetch_p50_ms", "fetch_p99_ms", "seconds")})
    if args.limit:
        print(f"capture at {meta['records_per_second'] / args.limit:.1%} of the {args.limit}/s limit")
    print("emulator:", {k: stats[k] for k in ("served_per_second", "ok_per_second", "rate_limited", "html_errors",
                                              "hangs", "max_in_flight")})
    print("checks:", checks)
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
