"""The distributed engine for real: `dagster dev` with USAGE_CELERY_BROKER_URL set, a private redis-server as
the broker and result backend, two `dagster-celery` worker processes, and the same two-organisation x two-day
backfill as test_dagster_dev: exact and green per organisation-day, every step executed by a Celery worker."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psutil
import pytest
from mirakuru import SimpleExecutor

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import REPO, alive, pipeline_env, start_dagster_dev
from usage_pipeline_tests.org_backfill import (
    GREEN,
    backfill_runs,
    keys,
    launch_backfill,
    one_run_per_organisation_at_a_time,
    organisations_env,
    second_organisation,
    wait_for_backfill,
    wait_for_organisations,
)
from usage_pipeline_tests.redis_server import run_redis

pytestmark = pytest.mark.slow  # dagster dev, redis-server and two Celery workers

WORKERS = 2


def start_worker(name: str, env: dict[str, str], log_path: Path) -> SimpleExecutor:
    """`dagster-celery worker start` (one process in its pool) in its own session; returns once it says ready."""
    command = [sys.executable, "-m", "dagster_celery.cli", "worker", "start", "-A", "dagster_celery.app",
               "-y", str(REPO / "celery.yaml"), "-n", name, "--", "--concurrency=1"]
    log = log_path.open("ab")
    worker = SimpleExecutor(command, cwd=str(REPO), envvars=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, timeout=60)
    worker.start()
    deadline = time.monotonic() + 90
    while " ready." not in log_path.read_text(errors="replace"):
        assert worker.running() and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
        time.sleep(0.5)
    return worker


def tree(pid: int) -> set[int]:
    parent = psutil.Process(pid)
    return {pid, *(child.pid for child in parent.children(recursive=True))}


@pytest.fixture(scope="module")
def globex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with second_organisation(tmp_path_factory.mktemp("globex_celery")) as server:
        yield server


def test_the_two_organisation_backfill_runs_exact_on_celery_with_two_workers(
        emulator: EmulatorProcess, globex: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> None:
    servers = {"acme": emulator, "globex": globex}
    days = [yesterday() - dt.timedelta(days=n) for n in (1, 0)]
    with run_redis(tmp_path / "redis") as broker:
        env = {**pipeline_env(emulator, influxd, tmp_path), **organisations_env(servers, tmp_path),
               "USAGE_CELERY_BROKER_URL": broker}
        workers = [start_worker(f"w{n}@%h", env, tmp_path / f"worker{n}.log") for n in range(WORKERS)]
        server = start_dagster_dev([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"], env,
                                   tmp_path / "dagster_dev.log")
        try:
            worker_pids = [tree(worker.process.pid) for worker in workers if worker.process]
            wait_for_organisations(server, list(servers))
            backfill = launch_backfill(server, keys(list(servers), days))
            assert wait_for_backfill(server, backfill, runs=4) == ["SUCCESS"] * 4
            runs = backfill_runs(server, backfill)
            worker_pids = [pids | tree(worker.process.pid) for pids, worker in zip(worker_pids, workers, strict=True)
                           if worker.process]
        finally:
            for worker in workers:  # first: dagster dev's stop ends every process of its DAGSTER_HOME
                worker.stop()
            server.stop()
        assert not alive(server.processes())  # workers included: they share the DAGSTER_HOME

    assert sorted(runs) == sorted((org, day.isoformat()) for org in servers for day in days)
    for run in runs.values():
        assert run.status == "SUCCESS" and run.checks == GREEN, run
        assert run.check_days == {run.day} and run.check_orgs == {run.org}
    one_run_per_organisation_at_a_time(runs)
    steps = set().union(*(run.step_pids for run in runs.values()))
    every_worker = set().union(*worker_pids)
    assert steps and steps <= every_worker, (steps, worker_pids)  # no step ran in a run worker: Celery ran them
    assert all(pids & steps for pids in worker_pids), (steps, worker_pids)  # both workers took steps

    base = env["INFLUXDB_DATABASE"]
    with duckdb.connect(env["USAGE_DUCKDB_PATH"], read_only=True) as conn:
        totals = {(org, day): requests for org, day, requests in conn.execute(
            "SELECT org, strftime(day, '%Y-%m-%d'), requests FROM daily_totals").fetchall()}
    for org, emulated in servers.items():
        with InfluxStore(InfluxSettings(url=influxd.url, database=f"{base}_{org}")) as store:
            for day in days:
                truth, counts = emulated.truth(day), store.day_counts(day)
                assert counts.points == counts.distinct_ids == totals[(org, day.isoformat())] == truth["count"]
