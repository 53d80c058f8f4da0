"""The console commands as users type them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_usage_pipeline_emulator_serves_the_api_and_has_no_list_endpoint(tmp_path: Path) -> None:
    port = free_port()
    exe = shutil.which("usage-pipeline") or ""
    command = [exe] if exe else [sys.executable, "-m", "usage_pipeline.cli"]
    process = subprocess.Popen([*command, "emulator", "--host", "127.0.0.1", "--port", str(port),
                                "--generations-per-day", "100", "--management-key", "mk-test"],
                               stdout=open(tmp_path / "out.log", "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                key = requests.get(f"{base}/key", headers={"Authorization": "Bearer mk-test"}, timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "out.log").read_text()
                time.sleep(0.2)
        assert key.status_code == 200
        listing = requests.get(f"{base}/generations", headers={"Authorization": "Bearer mk-test"}, timeout=5)
        assert listing.status_code == 404 and listing.json()["error"]["code"] == 404
        assert "mk-test" not in (tmp_path / "out.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode in (0, -15)


def test_influx_setup_creates_the_database(influxd, tmp_path: Path) -> None:
    env = {**os.environ, "INFLUXDB_URL": influxd.url, "INFLUXDB_DATABASE": "cli_setup",
           "INFLUXDB_RETENTION_DAYS": "400", "OPENROUTER_API_KEY": "unused"}
    out = subprocess.run([sys.executable, "-m", "usage_pipeline.cli", "influx-setup"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'cli_setup' ready" in out.stdout
    shown = requests.get(f"{influxd.url}/query", params={"q": 'SHOW RETENTION POLICIES ON "cli_setup"'},
                         timeout=10).json()
    values = shown["results"][0]["series"][0]["values"]
    assert any(row[1].startswith("9600h") for row in values), values


REPO = Path(__file__).resolve().parent.parent


def test_dagster_and_dg_validate_the_definitions(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    for command in (["dagster", "definitions", "validate", "-w", "workspace.yaml"], ["dg", "check", "defs"]):
        exe = shutil.which(command[0])
        assert exe, f"{command[0]} is installed with the project"
        out = subprocess.run([exe, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{command}: {(out.stdout + out.stderr)[-3000:]}"
