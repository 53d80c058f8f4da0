"""The distributed engine for real, on machines that share no disk: `dagster dev` with USAGE_CELERY_BROKER_URL
set, a private redis-server as broker and result backend, a private PostgreSQL holding the Dagster instance
(docs/dagster.production.yaml, the very file production copies) and two `dagster-celery` workers, each with
its own working directory, TMPDIR and DAGSTER_HOME. The capture worker takes the default queue; the analysts'
worker holds the DuckDB file and takes only its queue. The two-organisation x two-day backfill of
test_dagster_dev is exact and green per organisation-day, every DuckDB step ran on the analysts' worker and
every other step on the capture worker, no DuckDB file exists anywhere else, and PostgreSQL itself holds the
runs and their check results."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb
import psutil
import psycopg2
import pytest
from dagster import AssetsDefinition, DagsterInstance
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from mirakuru import SimpleExecutor

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.defs.budgets import BUDGET_CHECK
from usage_pipeline.defs.executor import DUCKDB_QUEUE
from usage_pipeline.defs.summaries import daily_usage
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import (
    DAGSTER_DEV,
    REPO,
    STRAGGLER_TIMEOUT_S,
    alive,
    pipeline_env,
    start_dagster_dev,
)
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
from usage_pipeline_tests.postgres_server import run_postgres
from usage_pipeline_tests.redis_server import run_redis

PRODUCTION = REPO / "docs" / "dagster.production.yaml"
INSTANCE_DB = "dagster"  # the instance's own database; the day locks use the server's `postgres` database
POOL_LIMITS = {"openrouter_api": 3, "duckdb_writer": 1}  # set before the first run, as docs/production.md says


@dataclass
class Worker:
    """A running `dagster-celery worker start` and every process seen in its tree (`look`)."""

    executor: SimpleExecutor
    log_path: Path
    seen: list[psutil.Process] = field(default_factory=list)
    stragglers: list[psutil.Process] = field(default_factory=list)  # outlived its stop; killed

    def ready(self) -> None:
        """Until its log says it can take tasks; the log's tail if it exits or takes 90 s."""
        deadline = time.monotonic() + 90
        while " ready." not in self.log_path.read_text(errors="replace"):
            assert self.executor.running() and time.monotonic() < deadline, \
                self.log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.5)

    def look(self) -> set[int]:
        """Add its processes now (`dagster-celery`, the `celery` it starts, its pool) to `seen`; every pid seen."""
        if self.executor.process is not None:
            with suppress(psutil.NoSuchProcess):
                parent = psutil.Process(self.executor.process.pid)
                self.seen += [parent, *parent.children(recursive=True)]
        return {process.pid for process in self.seen}


@contextmanager
def celery_worker(name: str, env: Mapping[str, str], cwd: Path, queues: Sequence[str],
                  log_path: Path) -> Iterator[Worker]:
    """`dagster-celery worker start` (one process in its pool) in its own session, taking `queues` (none: the
    default queue). Stopping it, its pool finishes a warm shutdown after `dagster-celery` has exited: waited
    for up to STRAGGLER_TIMEOUT_S, then killed and kept in `stragglers`."""
    command = [sys.executable, "-m", "dagster_celery.cli", "worker", "start", "-A", "dagster_celery.app",
               "-y", str(REPO / "celery.yaml"), "-n", name, *(f"-q{queue}" for queue in queues),
               "--", "--concurrency=1"]
    with log_path.open("ab") as log:
        executor = SimpleExecutor(command, cwd=str(cwd), envvars=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=60)
        executor.start()
    worker = Worker(executor, log_path)
    try:
        yield worker
    finally:
        worker.look()
        executor.stop()
        deadline = time.monotonic() + STRAGGLER_TIMEOUT_S
        while (living := alive(worker.seen)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for straggler in living:
            straggler.kill()
        worker.stragglers = living


def machine(root: Path, shared: Mapping[str, str], organisations: Path) -> dict[str, str]:
    """A worker machine's own disk under `root` (work/ its working directory, tmp/ its TMPDIR, home/ its
    DAGSTER_HOME with the production instance file, its copy of the organisations file) and `shared`, the
    variables every machine sets alike."""
    for sub in ("work", "tmp", "home"):
        (root / sub).mkdir(parents=True)
    shutil.copy(PRODUCTION, root / "home" / "dagster.yaml")
    shutil.copy(organisations, root / "organisations.yaml")
    return {**shared, "DAGSTER_HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
            "USAGE_ORGANISATIONS": str(root / "organisations.yaml")}


def instance_env(url: str) -> dict[str, str]:
    """The production file's DAGSTER_PG_* variables for the INSTANCE_DB database of the server at `url`."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port and parts.username, url
    return {"DAGSTER_PG_HOST": parts.hostname, "DAGSTER_PG_PORT": str(parts.port),
            "DAGSTER_PG_USERNAME": parts.username, "DAGSTER_PG_PASSWORD": parts.password or "",
            "DAGSTER_PG_DB": INSTANCE_DB}


def stored_in_postgres(url: str, backfill: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Read from PostgreSQL's own tables, not through Dagster: the backfill's runs (id: status) and their check
    executions (run id, check, status)."""
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT r.run_id, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                       "WHERE t.key = 'dagster/backfill' AND t.value = %s", (backfill,))
        statuses = {str(run_id): str(status) for run_id, status in cursor.fetchall()}
        cursor.execute("SELECT run_id, check_name, execution_status FROM asset_check_executions "
                       "WHERE run_id = ANY(%s)", (list(statuses),))
        checks = sorted((str(run), str(name), str(status)) for run, name, status in cursor.fetchall())
    return statuses, checks


@pytest.fixture(scope="module")
def globex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with second_organisation(tmp_path_factory.mktemp("globex_celery")) as server:
        yield server


@pytest.mark.pure
def test_every_step_that_writes_the_duckdb_store_and_no_other_goes_to_the_duckdb_queue() -> None:
    from usage_pipeline.definitions import defs

    nodes = [node for node in [*(defs.assets or []), *(defs.asset_checks or [])]
             if isinstance(node, AssetsDefinition)]  # asset checks are AssetsDefinitions too
    writers = {node.node_def.name for node in nodes if "usage_db" in node.required_resource_keys}
    queued = {node.node_def.name for node in nodes if node.node_def.tags.get(DAGSTER_CELERY_QUEUE_TAG) == DUCKDB_QUEUE}
    assert writers == queued == {"duckdb__daily_usage", "duckdb__usage_history", "duckdb__usage_today"}


@pytest.mark.slow  # dagster dev, PostgreSQL, redis-server and two Celery workers
def test_the_two_organisation_backfill_runs_exact_on_celery_workers_that_share_no_disk(
        emulator: EmulatorProcess, globex: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    servers = {"acme": emulator, "globex": globex}
    days = [yesterday() - dt.timedelta(days=n) for n in (1, 0)]
    webserver_root, capture_root, analysts_root = tmp_path / "webserver", tmp_path / "capture", tmp_path / "analysts"
    volume = analysts_root / "volume" / "usage.duckdb"  # the analysts' DuckDB file, on their machine only
    for variable in ("DAGSTER_HOME", "USAGE_DUCKDB_PATH"):  # nothing reaches a worker by inheritance
        monkeypatch.delenv(variable, raising=False)
    with run_postgres() as postgres, run_redis(tmp_path / "redis") as broker:
        with closing(psycopg2.connect(postgres)) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {INSTANCE_DB}")
        instance_url = urlunsplit(urlsplit(postgres)._replace(path=f"/{INSTANCE_DB}"))
        shared = {**instance_env(postgres), "USAGE_CELERY_BROKER_URL": broker, "USAGE_LOCK_DATABASE_URL": postgres}
        env = {**pipeline_env(emulator, influxd, webserver_root), **organisations_env(servers, webserver_root),
               **shared}
        home = Path(env["DAGSTER_HOME"])
        shutil.copy(PRODUCTION, home / "dagster.yaml")
        shared |= {name: value for name, value in env.items()
                   if name.startswith(("OPENROUTER_", "INFLUXDB_")) or name.endswith("_OPENROUTER_KEY")}
        organisations = Path(env["USAGE_ORGANISATIONS"])
        capture_env = machine(capture_root, shared, organisations)  # no USAGE_DUCKDB_PATH: capture needs none
        analysts_env = {**machine(analysts_root, shared, organisations), "USAGE_DUCKDB_PATH": str(volume)}
        for name, value in instance_env(postgres).items():  # the test reads the instance as a third machine
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "reader"))
        with DagsterInstance.from_config(str(home)) as instance:  # `dagster instance concurrency set`, and the
            for pool, limit in POOL_LIMITS.items():  # schema made before three machines race to make it
                instance.event_log_storage.set_concurrency_slots(pool, limit)
        with (celery_worker("capture", capture_env, capture_root / "work", [], tmp_path / "capture.log") as capture,
              celery_worker("analysts", analysts_env, analysts_root / "work", [DUCKDB_QUEUE],
                            tmp_path / "analysts.log") as analysts):
            server = start_dagster_dev(DAGSTER_DEV, env, tmp_path / "dagster_dev.log")  # while the workers start
            try:
                for worker in (capture, analysts):
                    worker.ready()
                    worker.look()
                wait_for_organisations(server, list(servers))
                backfill = launch_backfill(server, keys(list(servers), days))
                assert wait_for_backfill(server, backfill, runs=4) == ["SUCCESS"] * 4
                runs = backfill_runs(server, backfill)
                statuses, checks = stored_in_postgres(instance_url, backfill)
                pids = {"capture": capture.look(), "analysts": analysts.look()}
                environs = [process.environ() for process in alive(capture.seen + analysts.seen)]
            finally:
                server.stop()
        assert not alive(server.processes()) and capture.stragglers == analysts.stragglers == []

    assert sorted(runs) == sorted((org, day.isoformat()) for org in servers for day in days)
    for run in runs.values():
        assert run.status == "SUCCESS" and run.checks == GREEN, run
        assert run.check_days == {run.day} and run.check_orgs == {run.org}
    one_run_per_organisation_at_a_time(runs)
    assert sorted(statuses.values()) == ["SUCCESS"] * 4  # in PostgreSQL's own tables
    assert checks == sorted((run_id, name, "SUCCEEDED") for run_id in statuses  # the ledger's and the budget's
                            for name in [*GREEN, BUDGET_CHECK])

    summary = daily_usage.op.name  # the one DuckDB step of a run; every other step is a capture's
    duckdb_steps = [run.step_pids_by_key.get(summary, set()) for run in runs.values()]
    assert all(duckdb_steps) and set().union(*duckdb_steps) <= pids["analysts"], (duckdb_steps, pids)
    other_steps = {pid for run in runs.values() for step, started in run.step_pids_by_key.items() if step != summary
                   for pid in started}
    assert other_steps and other_steps <= pids["capture"], (other_steps, pids)  # on Celery, not in run workers
    assert environs and [e for e in environs if any(str(webserver_root) in value for value in e.values())] == []
    assert not list(home.rglob("compute_logs")), "a step wrote its logs into the webserver's DAGSTER_HOME"
    assert list((analysts_root / "home").rglob("compute_logs")), "the DuckDB steps' logs are on their machine"
    files = [path for path in tmp_path.rglob("*") if ".duckdb" in path.suffixes]
    assert volume in files and [path for path in files if volume.parent not in path.parents] == [], files

    base = env["INFLUXDB_DATABASE"]
    with duckdb.connect(str(volume), read_only=True) as conn:
        totals = {(org, day): requests for org, day, requests in conn.execute(
            "SELECT org, strftime(day, '%Y-%m-%d'), requests FROM daily_totals").fetchall()}
    assert {org for org, _ in totals} == set(servers)
    for org, emulated in servers.items():
        with InfluxStore(InfluxSettings(url=influxd.url, database=f"{base}_{org}")) as store:
            for day in days:
                truth, counts = emulated.truth(day), store.day_counts(day)
                assert counts.points == counts.distinct_ids == totals[(org, day.isoformat())] == truth["count"]
