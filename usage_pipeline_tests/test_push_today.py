"""Today before midnight, with every part real: the emulator's live Broadcast of today's traffic ->
`usage-pipeline receive` -> `usage-pipeline drain` -> influxd -> the `usage_today` job -> the DuckDB file ->
the report, drawn in headless Chromium with the provisional hours beside the captured days."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from dagster import DagsterInstance

from openrouter_emulator.process import run_emulator
from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.resources import (
    BroadcastJournalResource,
    DailyUsageDatabase,
    InfluxDBResource,
    OpenRouterResource,
)
from usage_pipeline.defs.today import REFRESH_MINUTES, usage_today_schedule
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.report import write_report
from usage_pipeline_tests.browser import open_page
from usage_pipeline_tests.push import TOKEN, run_receiver
from usage_pipeline_tests.test_report_browser import CHARTS, RENDERED, drawn_colours


def test_todays_pushed_traffic_is_in_usage_today_and_the_report_within_minutes(
        influxd: LocalInfluxd, store: InfluxStore, tmp_path: Path) -> None:
    journal_path, published = tmp_path / "journal.sqlite3", tmp_path / "usage.duckdb"
    with run_receiver(journal_path, tmp_path / "receiver.log") as receiver, \
            run_emulator(seed=71, generations_per_day=1_000_000, days=1, log_path=tmp_path / "emu.log",
                         env={**os.environ, "EMULATOR_BROADCAST_TOKEN": TOKEN},
                         extra_args=["--analytics-rpm", "0", "--fresh-404-seconds", "1",
                                     "--broadcast-url", receiver.url, "--broadcast-drop-share", "0.05",
                                     "--broadcast-duplicate-share", "0.05"]) as server:
        env = {**os.environ, "OPENROUTER_API_KEY": server.management_key, "OPENROUTER_BASE_URL": server.base_url,
               "INFLUXDB_URL": influxd.url, "INFLUXDB_DATABASE": store.settings.database,
               "BROADCAST_JOURNAL_PATH": str(journal_path), "BROADCAST_DRAIN_LAG_S": "1.5"}
        with (tmp_path / "drain.log").open("wb") as log:
            drain = subprocess.Popen([sys.executable, "-m", "usage_pipeline.cli", "drain", "--interval", "0.5"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            today = dt.datetime.now(dt.UTC).date()
            while len(store.day_ids(today)) < 100 and time.monotonic() < deadline:
                time.sleep(1)
            pushed = server.broadcast_stats()
        finally:
            drain.terminate()
            drain.wait(30)
    stored = store.day_ids(today)
    assert len(stored) >= 100 and pushed["connection_test"] == {"status": 200}
    assert stored <= set(pushed["delivered_ids"])  # only what push delivered, before any nightly run
    assert "Traceback" not in (tmp_path / "drain.log").read_text()

    defs = build_defs({"openrouter": OpenRouterResource(api_key="unused-by-usage-today"),
                       "influxdb": InfluxDBResource(url=influxd.url, database=store.settings.database),
                       "usage_db": DailyUsageDatabase(path=str(published)),
                       "broadcast": BroadcastJournalResource(path=str(journal_path))})
    result = defs.resolve_job_def("usage_today").execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success
    with duckdb.connect(str(published), read_only=True) as conn:
        requests, provisional, as_of = conn.execute(
            "SELECT sum(requests), bool_and(provisional), max(built_at) FROM usage_today WHERE day = ?",
            [today]).fetchall()[0]
    assert requests == len(store.day_ids(today)) and provisional  # what push stored, every row provisional
    assert dt.datetime.now(dt.UTC).replace(tzinfo=None) - as_of < dt.timedelta(minutes=REFRESH_MINUTES)
    ticks = usage_today_schedule.cron_schedule
    assert ticks == f"*/{REFRESH_MINUTES} * * * *" and REFRESH_MINUTES <= 5  # refreshed at least every 5 min

    report = write_report(tmp_path / "report.html", duckdb_path=published, days=7)
    page = open_page(report.path.resolve().as_uri(), ready=RENDERED, evaluate=CHARTS)
    assert page.console_errors == [] and page.page_errors == [] and page.refused_requests == []
    drawn = {chart["id"]: chart for chart in page.evaluated}
    assert "usage-today" in drawn and drawn_colours(page, "usage-today")  # bars seen, not only a legend
    hours = {str(x)[:13] for trace in drawn["usage-today"]["traces"] for x in trace["x"]}
    assert today.isoformat() in {hour[:10] for hour in hours}
    assert "PROVISIONAL" in report.path.read_text()

