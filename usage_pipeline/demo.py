"""Command 1: run the `daily_ledger` job through Dagster for the last few days, then the `usage_history` job
for the rest of the year, then (with the emulator) today so far through the push path, and print the summary.

With no OPENROUTER_API_KEY it starts the project's OpenRouter emulator (generations for the last 31 days,
aggregate-only history before them); with no INFLUXDB_URL a private influxd under the data directory. With
real settings the same jobs run against OpenRouter and your InfluxDB.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import duckdb
from dagster import DagsterInstance, JobDefinition

from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.organisations import add_organisations
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.defs.resources import (
    BroadcastJournalResource,
    DailyUsageDatabase,
    InfluxDBResource,
    OpenRouterResource,
)
from usage_pipeline.demo_today import push_today, run_asset_job
from usage_pipeline.influx.local_server import run_influxd
from usage_pipeline.openrouter.settings import redact_url
from usage_pipeline.organisations import load_organisations
from usage_pipeline.report import write_report
from usage_pipeline.settings import setting

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATION_WINDOW_DAYS = 31  # OpenRouter lists generations this far back; older days exist only as aggregates


def _dagster_home(data_dir: Path) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def print_summary(path: Path, days: list[dt.date]) -> None:
    # A read-only connection: the published file is a snapshot that the pipeline replaces atomically.
    with duckdb.connect(str(path), read_only=True) as conn:
        per_model = conn.execute(
            "SELECT day, model_slug, model, requests, round(total_cost, 4) AS total_cost_usd, tokens_prompt, "
            "tokens_completion FROM daily_usage WHERE day BETWEEN ? AND ? ORDER BY day, requests DESC",
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
    today = dt.datetime.now(dt.UTC).date()
    wanted = [today - dt.timedelta(days=n) for n in range(days, 0, -1)]
    with ExitStack() as stack:
        # Resources left unset read their environment variables at run time (usage_pipeline.settings);
        # what the demo starts itself is passed in, and the environment is never changed.
        openrouter, influxdb = OpenRouterResource(), InfluxDBResource()
        emulator = None  # the emulator also pushes today's Broadcast deliveries (`demo_today`)
        organisations = load_organisations()
        if organisations.members[0].implicit and not os.environ.get("OPENROUTER_API_KEY", "").strip():
            # The emulator is an optional extra: imported only when it stands in for OpenRouter (the CLI turns
            # its absence into a one-line install hint).
            from openrouter_emulator.process import run_emulator

            # Generations for the 31 days OpenRouter can enumerate (built only when asked for), aggregate-only
            # history before them; the demo still captures only its `days`.
            emulator = stack.enter_context(run_emulator(generations_per_day=generations_per_day,
                                                        days=max(days, GENERATION_WINDOW_DAYS),
                                                        log_path=data_dir / "emulator.log"))
            openrouter = OpenRouterResource(api_key=emulator.management_key, base_url=emulator.base_url)
            print(f"OpenRouter: the project's emulator at {emulator.base_url} ({generations_per_day} generations/day "
                  f"for {max(days, GENERATION_WINDOW_DAYS)} days, daily aggregates only before them)")
        else:
            print(f"OpenRouter: {redact_url(setting('OPENROUTER_BASE_URL'))}")
        if not os.environ.get("INFLUXDB_URL", "").strip():
            influx = stack.enter_context(run_influxd(data_dir / "influxd", log_path=data_dir / "influxd.log"))
            influxdb = InfluxDBResource(url=influx.url)
            print(f"InfluxDB: a private influxd at {influx.url} (data in {data_dir / 'influxd'})")
        else:
            print(f"InfluxDB: {influxdb.settings(organisations, organisations.names[0]).url}")
        published = Path(os.environ.get("USAGE_DUCKDB_PATH", "").strip() or data_dir / "usage.duckdb")
        home = _dagster_home(data_dir)

        defs = build_defs({"openrouter": openrouter, "influxdb": influxdb,
                           "usage_db": DailyUsageDatabase(path=str(published)),
                           "broadcast": BroadcastJournalResource(path=str(data_dir / "broadcast.sqlite3"))})
        job = defs.resolve_job_def("daily_ledger")
        failed = []
        with DagsterInstance.from_config(str(home)) as instance:
            print(f"Dagster instance: {home}")
            add_organisations(instance, organisations.names)
            for partition in [OrgDay(org, day) for org in organisations.names for day in wanted]:
                result = job.execute_in_process(partition_key=partition.key, instance=instance, raise_on_error=False,
                                                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
                checks = [f"{e.asset_check_evaluation_data.check_name}="
                          f"{'pass' if e.asset_check_evaluation_data.passed else 'FAIL'}"
                          for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
                outcome = "succeeded" if result.success else "FAILED"
                print(f"{partition}: run {result.run_id[:8]} {outcome}; {', '.join(checks)}")
                if not result.success:
                    failed.append(partition.day)
            if not run_history(defs.resolve_job_def("usage_history"), instance):
                failed.append(today)
            if emulator is not None and not push_today(emulator, openrouter, influxdb, organisations, data_dir,
                                                       defs.resolve_job_def("usage_today"), instance):
                failed.append(today)
        print_summary(published, wanted)
        print_history(published)
        report = write_report(data_dir / "usage_report.html", duckdb_path=published)
        print(f"\nusage report: {report.path}\n  {report.summary()}")
    return 1 if failed else 0


def run_history(job: JobDefinition, instance: DagsterInstance) -> bool:
    """The usage_history job: every uncaptured day of the last USAGE_HISTORY_DAYS from OpenRouter's aggregates."""
    ran = run_asset_job(job, instance, "duckdb__usage_history")
    if ran is None:
        return False
    run_id, meta = ran
    print(f"usage_history: run {run_id[:8]} succeeded; {meta['days_written']} aggregate days "
          f"{meta['first_day']}..{meta['last_day']} in {meta['analytics_queries']} analytics queries, "
          f"{meta['days_skipped_exact']} captured days left as they are")
    return True


def print_history(path: Path) -> None:
    with duckdb.connect(str(path), read_only=True) as conn:
        statuses = conn.execute("SELECT capture_status, count(*), min(day), max(day), sum(requests), "
                                "round(sum(total_cost), 2) FROM daily_totals GROUP BY 1 ORDER BY 1").fetchall()
    print("\n== daily_totals by capture_status (complete: captured generation by generation; aggregate: "
          "OpenRouter's daily figures) ==")
    for status, count, first, last, requests, usd in statuses:
        print(f"{status:>10}: {count:4d} days {first}..{last}, {requests:,} requests, ${usd:,.2f}")
