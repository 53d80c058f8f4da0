"""The console commands as users type them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mirakuru import HTTPExecutor
from mirakuru.exceptions import ExecutorError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_usage_pipeline_emulator_serves_the_api_and_has_no_list_endpoint(tmp_path: Path) -> None:
    """Started as a user types it; ready once `GET /key` answers 200 to the management key given on the command
    line. `stop()` SIGTERMs it, and mirakuru fails the test unless it exits 0 (or by the signal)."""
    port = free_port()
    exe = shutil.which("usage-pipeline")
    command = [exe] if exe else [sys.executable, "-m", "usage_pipeline.cli"]
    base = f"http://127.0.0.1:{port}/api/v1"
    log_path = tmp_path / "out.log"
    with open(log_path, "w") as log:
        emulator = HTTPExecutor([*command, "emulator", "--host", "127.0.0.1", "--port", str(port),
                                 "--generations-per-day", "100", "--management-key", "mk-test"],
                                url=f"{base}/key", method="GET", status=200, timeout=30,
                                headers={"Authorization": "Bearer mk-test"},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            emulator.start()
        except ExecutorError as exc:
            pytest.fail(f"{exc}\n{log_path.read_text()}")
        try:
            listing = requests.get(f"{base}/generations", headers={"Authorization": "Bearer mk-test"}, timeout=5)
            assert listing.status_code == 404 and listing.json()["error"]["code"] == 404
        finally:
            emulator.stop()
    assert "mk-test" not in log_path.read_text()


def test_influx_setup_creates_the_database(influxd, tmp_path: Path) -> None:
    env = {**os.environ, "INFLUXDB_URL": influxd.url, "INFLUXDB_DATABASE": "cli_setup",
           "INFLUXDB_RETENTION_DAYS": "400", "OPENROUTER_API_KEY": "unused"}
    out = subprocess.run([sys.executable, "-m", "usage_pipeline.cli", "influx-setup"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "database 'cli_setup' of organisation default ready" in out.stdout
    shown = requests.get(f"{influxd.url}/query", params={"q": 'SHOW RETENTION POLICIES ON "cli_setup"'},
                         timeout=10).json()
    values = shown["results"][0]["series"][0]["values"]
    assert any(row[1].startswith("9600h") for row in values), values


REPO = Path(__file__).resolve().parent.parent


def test_dagster_validates_the_workspace_definitions(tmp_path: Path) -> None:
    """workspace.yaml (what `dagster dev -w workspace.yaml` serves) loads. `dg check defs` is not run here: `dg dev`
    takes the same steps (project from `[tool.dg]`, YAML check, generated workspace) before serving, and
    test_dagster_dev runs it end to end."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    exe = shutil.which("dagster")
    assert exe, "dagster is installed with the project"
    out = subprocess.run([exe, "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


@pytest.mark.parametrize("argv", [["capture", "2026-11-30"], ["release-dead-runs"]])
def test_commands_on_the_instance_name_an_unset_dagster_home_in_one_line(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    out = subprocess.run([sys.executable, "-m", "usage_pipeline.cli", *argv], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"{argv[0]}: ") and "DAGSTER_HOME" in out.stderr
