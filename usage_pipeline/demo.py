"""Command 1: run the `daily_usage` job through Dagster for the last few days and print the summary.

With no OPENROUTER_API_KEY it starts the project's OpenRouter emulator; with no INFLUXDB_URL a private
influxd under the data directory. With real settings the same job runs against OpenRouter and your InfluxDB.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import duckdb

from openrouter_emulator.process import run_emulator
from usage_pipeline.influx.local_server import run_influxd

REPO_ROOT = Path(__file__).resolve().parent.parent


def _dagster_home(data_dir: Path) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def print_summary(path: Path, days: list[dt.date]) -> None:
    # A read-only connection: the published file is a snapshot that the pipeline replaces atomically.
    with duckdb.connect(str(path), read_only=True) as conn:
        per_model = conn.execute(
            "SELECT day, model, requests, round(total_cost, 4) AS total_cost_usd, tokens_prompt, tokens_completion "
            "FROM daily_usage WHERE day BETWEEN ? AND ? ORDER BY day, requests DESC",
            [min(days), max(days)]).df()
        totals = conn.execute(
            "SELECT day, requests, api_requests, round(total_cost, 4) AS total_cost_usd, models, api_keys, users, "
            "capture_status FROM daily_totals WHERE day BETWEEN ? AND ? ORDER BY day",
            [min(days), max(days)]).df()
    print(f"\n== daily_usage (per model) from {path} ==")
    print(per_model.to_string(index=False))
    print("\n== daily_totals ==")
    print(totals.to_string(index=False))


def run_demo(days: int = 3, generations_per_day: int = 2000, data_dir: Path = Path("data")) -> int:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    today = dt.datetime.now(dt.timezone.utc).date()
    wanted = [today - dt.timedelta(days=n) for n in range(days, 0, -1)]
    with ExitStack() as stack:
        if not os.environ.get("OPENROUTER_API_KEY"):
            emulator = stack.enter_context(run_emulator(generations_per_day=generations_per_day, days=days,
                                                        log_path=data_dir / "emulator.log"))
            os.environ["OPENROUTER_API_KEY"] = emulator.management_key
            os.environ["OPENROUTER_BASE_URL"] = emulator.base_url
            print(f"OpenRouter: the project's emulator at {emulator.base_url} ({generations_per_day} generations/day)")
        else:
            print(f"OpenRouter: {os.environ.get('OPENROUTER_BASE_URL', 'https://openrouter.ai/api/v1')}")
        if not os.environ.get("INFLUXDB_URL"):
            influx = stack.enter_context(run_influxd(data_dir / "influxd", log_path=data_dir / "influxd.log"))
            os.environ["INFLUXDB_URL"] = influx.url
            print(f"InfluxDB: a private influxd at {influx.url} (data in {data_dir / 'influxd'})")
        else:
            print(f"InfluxDB: {os.environ['INFLUXDB_URL']}")
        os.environ.setdefault("USAGE_DUCKDB_PATH", str(data_dir / "usage.duckdb"))
        home = _dagster_home(data_dir)

        from dagster import DagsterInstance  # after the environment is set: definitions read it

        from usage_pipeline.definitions import defs

        job = defs.resolve_job_def("daily_usage")
        failed = []
        with DagsterInstance.get() as instance:
            print(f"Dagster instance: {home}")
            for day in wanted:
                result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False,
                                                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
                checks = [f"{e.asset_check_evaluation_data.check_name}="
                          f"{'pass' if e.asset_check_evaluation_data.passed else 'FAIL'}"
                          for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
                outcome = "succeeded" if result.success else "FAILED"
                print(f"{day}: run {result.run_id[:8]} {outcome}; {', '.join(checks)}")
                if not result.success:
                    failed.append(day)
        print_summary(Path(os.environ["USAGE_DUCKDB_PATH"]), wanted)
    return 1 if failed else 0
