"""A real `dagster dev` (webserver + daemon): it shows the definitions, and a 3-day UI-style backfill
runs one run per day, each with its own green checks."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from dagster import DagsterEventType, DagsterInstance

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.defs.recapture import run_day
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.store import InfluxSettings, InfluxStore
from usage_pipeline_tests.conftest import yesterday

pytestmark = pytest.mark.slow  # real `dagster dev` / Dagster CLI processes

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    def __init__(self, url: str, home: Path, env: dict[str, str]) -> None:
        self.url, self.home, self.env = url, home, env

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


@contextmanager
def running(command: list[str], emulator: EmulatorProcess, influxd: LocalInfluxd, root: Path) -> Iterator[DagsterDev]:
    """Start `dagster dev` or `dg dev` from the repository root against the test servers; stop it after."""
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OPENROUTER_API_KEY": emulator.management_key,
        "OPENROUTER_BASE_URL": emulator.base_url,
        "INFLUXDB_URL": influxd.url,
        "INFLUXDB_DATABASE": f"dev_{uuid.uuid4().hex[:8]}",
        "USAGE_DUCKDB_PATH": str(root / "usage.duckdb"),
    }
    log_file = root / "dev.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = DagsterDev(f"http://127.0.0.1:{port}", home, env)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    data = server.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
                    if data["repositoriesOrError"].get("nodes"):
                        break
                except (requests.RequestException, AssertionError):
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command} did not come up:\n" + log_file.read_text()[-4000:])
                time.sleep(1)
            yield server
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def dagster_dev(emulator: EmulatorProcess, influxd: LocalInfluxd,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    with running([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"], emulator, influxd,
                 tmp_path_factory.mktemp("dagster_dev")) as server:
        yield server


def shown_definitions(server: DagsterDev) -> dict[str, Any]:
    data = server.graphql("""{ repositoriesOrError { ... on RepositoryConnection { nodes {
        jobs { name } schedules { name cronSchedule } sensors { name }
        assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
    } } } }""")
    repo = data["repositoriesOrError"]["nodes"][0]
    return {
        "jobs": {j["name"] for j in repo["jobs"]},
        "schedules": {s["name"]: s["cronSchedule"] for s in repo["schedules"]},
        "sensors": {s["name"] for s in repo["sensors"]},
        "checks": {tuple(a["assetKey"]["path"]): {c["name"]: c["blocking"]
                                                  for c in a["assetChecksOrError"].get("checks", [])}
                   for a in repo["assetNodes"]},
    }


def test_dagster_dev_shows_assets_checks_job_schedule_and_sensor(dagster_dev: DagsterDev) -> None:
    shown = shown_definitions(dagster_dev)
    assert "daily_usage" in shown["jobs"]
    assert shown["schedules"] == {"daily_usage_schedule": "0 2 * * *"}
    assert "recapture_failed_days" in shown["sensors"]
    assert {("influxdb", "generations"), ("duckdb", "daily_usage")} <= set(shown["checks"])
    assert shown["checks"][("influxdb", "generations")] == {
        "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": False}


def test_dg_dev_shows_the_same_definitions(dagster_dev: DagsterDev, emulator: EmulatorProcess, influxd: LocalInfluxd,
                                          tmp_path: Path) -> None:
    dg = shutil.which("dg")
    assert dg, "dg (dagster-dg-cli) is installed with the project"
    with running([dg, "dev"], emulator, influxd, tmp_path) as server:
        assert shown_definitions(server) == shown_definitions(dagster_dev)


def test_a_three_day_backfill_runs_one_run_per_day_with_green_checks(dagster_dev: DagsterDev) -> None:
    days = [(yesterday() - dt.timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    launched = dagster_dev.graphql("""
        mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"params": {"partitionNames": days,
                    "assetSelection": [{"path": ["influxdb", "generations"]}, {"path": ["duckdb", "daily_usage"]}]}})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]

    deadline = time.monotonic() + 420
    status = None
    while time.monotonic() < deadline:
        status = dagster_dev.graphql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { status } ... on PythonError { message } } }""",
            {"id": backfill_id})["partitionBackfillOrError"]
        if status.get("status") in {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}:
            break
        time.sleep(3)
    assert status and status.get("status") in {"COMPLETED", "COMPLETED_SUCCESS"}, status

    instance = DagsterInstance.from_config(str(dagster_dev.home))
    try:
        runs = instance.get_runs()
        backfill_runs = [r for r in runs if r.tags.get("dagster/backfill") == backfill_id]
        assert sorted(str(run_day(r.tags)) for r in backfill_runs) == days  # one run per day
        for run in backfill_runs:
            assert run.status.value == "SUCCESS", run.run_id
            evaluations = [e.dagster_event.event_specific_data
                           for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]
            assert {e.check_name: e.passed for e in evaluations} == {
                "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": True}
            assert {e.metadata["day"].value for e in evaluations} == {str(run_day(run.tags))}
    finally:
        instance.dispose()

    store = InfluxStore(InfluxSettings(url=dagster_dev.env["INFLUXDB_URL"],
                                       database=dagster_dev.env["INFLUXDB_DATABASE"]))
    with duckdb.connect(dagster_dev.env["USAGE_DUCKDB_PATH"], read_only=True) as conn:
        totals = dict(conn.execute("SELECT strftime(day, '%Y-%m-%d'), requests FROM daily_totals").fetchall())
    for day in days:
        counts = store.day_counts(dt.date.fromisoformat(day))
        assert counts.points == counts.distinct_ids == totals[day] > 0
