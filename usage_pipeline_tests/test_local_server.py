"""The private influxd starter: a server that dies at start fails with its exit code and log tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from usage_pipeline.influx.local_server import run_influxd, start_influxd


def test_an_influxd_that_dies_at_start_fails_naming_its_exit_code_and_log(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "influxd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'run: open server: open tsdb store: permission denied' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError) as failure:
        start_influxd(tmp_path / "data", log_path=tmp_path / "influxd.log")
    message = str(failure.value)
    assert "influxd exited with code 3" in message and "permission denied" in message


def test_the_real_influxd_starts_answers_and_stops(tmp_path: Path) -> None:
    with run_influxd(tmp_path / "data", log_path=tmp_path / "influxd.log") as server:
        assert server.process is not None and server.process.poll() is None
        assert requests.get(f"{server.url}/ping", timeout=5).status_code == 204
        process = server.process
    assert process.poll() is not None  # stopped with the block
