"""A private, throwaway `influxd` (1.x) for tests and the demo: its data under one directory, listening only on
free 127.0.0.1 ports, so several run side by side without touching a system InfluxDB. mirakuru starts it in its
own session, polls `/ping` until it answers 204, and stops it with SIGTERM, then SIGKILL if it hangs.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mirakuru import HTTPExecutor
from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError, ProcessFinishedWithError, TimeoutExpired

_TIMEOUT_S = 30.0  # mirakuru's one timeout: for /ping to answer at start, and for SIGTERM to end it at stop
_PING_TIMEOUT_S = 1.0
_START_ATTEMPTS = 3  # a free port can be taken between probing it and influxd binding it
_LOG_TAIL_LINES = 40

logger = logging.getLogger(__name__)


@dataclass
class LocalInfluxd:
    """A running private influxd; `stop()` ends it (data stays in `data_dir`)."""

    url: str
    data_dir: Path
    executor: HTTPExecutor
    log_path: Path | None = None

    @property
    def process(self) -> subprocess.Popen[str] | None:
        """The influxd process while it runs (mirakuru drops it once stopped)."""
        return self.executor.process

    def stop(self) -> None:
        """SIGTERM so the WAL is flushed, SIGKILL only if it hangs; safe to call twice. An unexpected exit code is
        logged, not raised: stop runs in `finally` blocks, where raising would hide the error that got there."""
        try:
            self.executor.stop()
        except ProcessFinishedWithError as exc:
            logger.warning("influxd (data dir %s) exited with code %s", self.data_dir, exc.exit_code)


def influxd_binary() -> str:
    """Path of the influxd executable, or an error that says how to get one."""
    found = shutil.which("influxd")
    if found is None:
        raise FileNotFoundError("influxd not found: install Debian's influxdb package (apt-get install -y influxdb), "
                                "or set INFLUXDB_URL to a running InfluxDB")
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


def _start(data_dir: Path, log_path: Path) -> LocalInfluxd:
    """One attempt on fresh ports; mirakuru raises if influxd exits, never answers, or the port is taken."""
    http_port, rpc_port = _free_port(), _free_port()
    config_path = data_dir / "influxd.conf"
    config_path.write_text(render_config(data_dir, http_port, rpc_port))
    url = f"http://127.0.0.1:{http_port}"
    with log_path.open("ab") as log:  # the child keeps its own descriptor; no pipe that could fill and block it
        executor = HTTPExecutor([influxd_binary(), "-config", str(config_path)], url=f"{url}/ping", status=204,
                                method="GET", request_timeout=_PING_TIMEOUT_S, timeout=_TIMEOUT_S,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        executor.start()
    return LocalInfluxd(url=url, data_dir=data_dir, executor=executor, log_path=log_path)


def start_influxd(data_dir: Path, *, log_path: Path | None = None) -> LocalInfluxd:
    """Start influxd on free loopback ports with its data in `data_dir`; return once /ping answers."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path) if log_path is not None else data_dir / "influxd.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    why = "not started"
    for _attempt in range(_START_ATTEMPTS):
        try:
            return _start(data_dir, log_file)
        except TimeoutExpired:  # alive but never ready (mirakuru killed it): other ports would not help
            why = f"did not answer /ping within {_TIMEOUT_S:.0f}s"
            break
        except ProcessExitedWithError as exc:
            why = f"exited with code {exc.exit_code}"
            if "address already in use" not in _log_tail(log_file).lower():
                break
        except AlreadyRunning:
            why = "found its port taken"
    raise RuntimeError(f"influxd {why} (data dir {data_dir}); log tail from {log_file}:\n{_log_tail(log_file)}")


@contextmanager
def run_influxd(data_dir: Path | None = None, log_path: Path | None = None) -> Iterator[LocalInfluxd]:
    """Run influxd for the duration of a `with` block; a temporary data dir is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="influxd-") as scratch:
        server = start_influxd(Path(data_dir) if data_dir is not None else Path(scratch), log_path=log_path)
        try:
            yield server
        finally:
            server.stop()
