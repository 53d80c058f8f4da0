"""A private, throwaway `influxd` (1.x) for tests and the demo.

Everything lives under one data directory and binds only to free 127.0.0.1 ports, so several can run
side by side without touching a system InfluxDB or its /var/lib data.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3  # a free port can be taken between probing it and influxd binding it
_LOG_TAIL_LINES = 40


@dataclass
class LocalInfluxd:
    """A running private influxd; `stop()` ends it (data stays in `data_dir`)."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path | None = None

    def stop(self) -> None:
        """Terminate gracefully so the WAL is flushed; kill only if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=_STOP_TIMEOUT_S)


def influxd_binary() -> str:
    """Path of the influxd executable, or an error that says how to get one."""
    found = shutil.which("influxd")
    if found is None:
        raise FileNotFoundError(
            "influxd not found: install Debian's influxdb package (apt-get install -y influxdb), "
            "or set INFLUXDB_URL to a running InfluxDB"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_str(path: Path) -> str:
    """A TOML basic string (JSON's escaping is a valid subset) so odd paths cannot break the config."""
    return json.dumps(str(path))


def render_config(data_dir: Path, http_port: int, rpc_port: int) -> str:
    """influxd 1.x TOML: storage under data_dir, loopback-only listeners, nothing phoning home."""
    return f"""\
# Debian's build reads `reporting-enabled`; upstream 1.x reads `reporting-disabled`. Unknown keys are ignored.
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {_toml_str(data_dir / "meta")}
  logging-enabled = false

[data]
  dir = {_toml_str(data_dir / "data")}
  wal-dir = {_toml_str(data_dir / "wal")}
  query-log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  max-row-limit = 0

[logging]
  level = "info"
  suppress-logo = true
"""


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log empty)"


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once /ping answers 204; False if influxd exited or the timeout passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if requests.get(f"{url}/ping", timeout=1.0).status_code == 204:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def _spawn(data_dir: Path, log_path: Path) -> LocalInfluxd:
    http_port, rpc_port = _free_port(), _free_port()
    config_path = data_dir / "influxd.conf"
    config_path.write_text(render_config(data_dir, http_port, rpc_port))
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [influxd_binary(), "-config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return LocalInfluxd(url=f"http://127.0.0.1:{http_port}", data_dir=data_dir, process=process, log_path=log_path)


def start_influxd(data_dir: Path, *, log_path: Path | None = None) -> LocalInfluxd:
    """Start influxd on free loopback ports with its data in `data_dir`; return once /ping answers."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path) if log_path is not None else data_dir / "influxd.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(_START_ATTEMPTS):
        server = _spawn(data_dir, log_file)
        if _wait_ready(server.url, server.process, _START_TIMEOUT_S):
            return server
        exited = server.process.poll() is not None
        server.stop()
        if not exited:  # alive but never ready: retrying on other ports would not help
            break
    raise RuntimeError(
        f"influxd did not answer /ping within {_START_TIMEOUT_S:.0f}s (data dir {data_dir}); "
        f"log tail from {log_file}:\n{_log_tail(log_file)}"
    )


@contextmanager
def run_influxd(data_dir: Path | None = None, log_path: Path | None = None) -> Iterator[LocalInfluxd]:
    """Run influxd for the duration of a `with` block; a temporary data dir is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="influxd-") as scratch:
        server = start_influxd(Path(data_dir) if data_dir is not None else Path(scratch), log_path=log_path)
        try:
            yield server
        finally:
            server.stop()
