"""How long a day takes to fail when OpenRouter is unreachable or keeps failing, with default settings.

Runs the real `daily_ledger` job (emulator, private influxd, ephemeral Dagster instance) and prints the
seconds to failure and the failure's message. No assertions: figures for the notes.

    python -m benchmarks.failure_bounds
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import tempfile
import time
from pathlib import Path

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.organisations import default_instance
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OpenRouterResource
from usage_pipeline.influx.local_server import run_influxd
from usage_pipeline.organisations import DEFAULT_NAME

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_day(base_url: str, api_key: str, influx_url: str, root: Path) -> tuple[float, bool, str]:
    defs = build_defs({"openrouter": OpenRouterResource(api_key=api_key, base_url=base_url),
                       "influxdb": InfluxDBResource(url=influx_url, database="bounds"),
                       "usage_db": DailyUsageDatabase(path=str(root / "usage.duckdb"))})
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    started = time.monotonic()
    result = defs.resolve_job_def("daily_ledger").execute_in_process(
        partition_key=OrgDay(DEFAULT_NAME, day).key, instance=default_instance(), raise_on_error=False,
        run_config=QUIET)
    seconds = time.monotonic() - started
    failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
    error = failure.step_failure_data.error if failure else None
    message = error.message.strip().splitlines()[-1] if error else ""
    return seconds, result.success, message


def report(name: str, outcome: tuple[float, bool, str]) -> None:
    seconds, success, message = outcome
    print(f"{name}: {'succeeded' if success else 'failed'} after {seconds:.1f} s\n  {message[:400]}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, run_influxd(Path(tmp) / "influxd") as influxd:
        root = Path(tmp)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        report("OpenRouter unreachable (closed port)",
               run_day(f"http://127.0.0.1:{closed}/api/v1", "sk-or-v1-x", influxd.url, root))
        emulator: EmulatorProcess
        with run_emulator(seed=3, generations_per_day=2000, days=1, log_path=root / "emu.log") as emulator:
            emulator.set_faults([{"path": "/generation", "status": 503, "count": 10_000_000, "retry_after": 1}])
            report("GET /generation answering 503 to everything",
                   run_day(emulator.base_url, emulator.management_key, influxd.url, root))
            emulator.set_faults([{"path": "/analytics/query", "status": 503, "count": 10_000_000}])
            report("POST /analytics/query answering 503 to everything",
                   run_day(emulator.base_url, emulator.management_key, influxd.url, root))


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
