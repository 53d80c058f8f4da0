"""The demo's today so far: the emulator's Broadcast of today's generations -> `usage-pipeline receive`
(a real process, local-only) -> the drain -> InfluxDB -> the `usage_today` job, so the report shows today's
provisional hours beside the captured days."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, JobDefinition
from mirakuru import HTTPExecutor

from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.drain import drain_once
from usage_pipeline.day_lock import DayLocks
from usage_pipeline.defs.resources import InfluxDBResource, OpenRouterResource
from usage_pipeline.organisations import Organisations


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def push_today(emulator: Any, openrouter: OpenRouterResource, influxdb: InfluxDBResource,
               organisations: Organisations, data_dir: Path, job: JobDefinition, instance: DagsterInstance) -> bool:
    """Push today's generations so far through the receiver and the drain, then refresh usage_today."""
    today = dt.datetime.now(dt.UTC).date()
    journal_path = data_dir / "broadcast.sqlite3"
    port = _free_port()
    env = {**os.environ, "BROADCAST_JOURNAL_PATH": str(journal_path)}
    env.pop("BROADCAST_TOKEN", None)
    with (data_dir / "receiver.log").open("ab") as log:
        receiver = HTTPExecutor([sys.executable, "-m", "usage_pipeline.cli", "receive", "--local-only", "--port",
                                 str(port)], url=f"http://127.0.0.1:{port}/health", timeout=30, envvars=env,
                                stdout=log, stderr=log)
        receiver.start()
    try:
        counts = emulator.broadcast_day(today, f"http://127.0.0.1:{port}/v1/traces", concurrency=16)
    finally:
        receiver.stop()
    connection = journal.connect(journal_path)
    drained = fetched = 0
    started = time.monotonic()
    org = organisations.members[0]  # the emulator is one organisation, the implicit one
    source, influx = openrouter.settings(org), influxdb.settings(organisations, org.name)
    with influxdb.store(organisations, org.name) as store:
        store.ensure_database()
    locks = DayLocks.beside(journal_path, org.name)
    while (report := drain_once(source, influx, connection, now=time.time() + 60, locks=locks)).due:
        drained, fetched = drained + report.due, fetched + report.fetched
    connection.close()
    print(f"today {today}: {counts['delivered']} deliveries pushed to the receiver, {fetched} records drained "
          f"into InfluxDB in {time.monotonic() - started:.1f} s")
    ran = run_asset_job(job, instance, "duckdb__usage_today")
    if ran is None:
        return False
    run_id, meta = ran
    days = ", ".join(str(day) for org_days in meta["days"].values() for day in org_days)
    print(f"usage_today: run {run_id[:8]} succeeded; {meta['requests']:,} requests, ${meta['spend_usd']:,.2f} "
          f"so far on {days} (provisional, as of {meta['as_of']})")
    return True


def run_asset_job(job: JobDefinition, instance: DagsterInstance, node: str) -> tuple[str, dict[str, Any]] | None:
    """Run an unpartitioned one-asset job; its run id and the asset's metadata, or None after saying it failed."""
    result = job.execute_in_process(instance=instance, raise_on_error=False,
                                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        print(f"{job.name}: run {result.run_id[:8]} FAILED")
        return None
    (event,) = result.asset_materializations_for_node(node)
    return result.run_id, {name: value.value for name, value in event.metadata.items()}
