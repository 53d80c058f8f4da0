"""A real `dagster dev` (or `dg dev`) for tests: webserver, daemon and code server against the test servers.

Tests that need the running UI (the definitions it shows, a backfill launched as the UI does, a killed run
worker, screenshots) start one with `running` or `start_dagster_dev` and talk to `DagsterDev.url`. mirakuru
starts it in its own session, polls until the code location has loaded, and stops it by signalling the
whole process group; `stop` then waits for every process carrying its DAGSTER_HOME, so none outlives it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from mirakuru import HTTPExecutor
from mirakuru.exceptions import ExecutorError, ProcessFinishedWithError

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.influx.local_server import LocalInfluxd

REPO = Path(__file__).resolve().parent.parent
DAGSTER_DEV = (sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml")
READY_TIMEOUT_S = 180.0  # mirakuru's one timeout: to load at start, and to exit after SIGTERM at stop
STRAGGLER_TIMEOUT_S = 30.0  # after dagster dev has exited, for children still shutting down
_LOADED = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"


class _LoadedWebserver(HTTPExecutor):
    """Ready once GraphQL lists a repository, not when the webserver first answers: the code location loads
    in its own process, and a test that starts earlier sees an empty or still-loading workspace."""

    def after_start_check(self) -> bool:
        if not super().after_start_check():
            return False
        try:
            body = requests.post(f"http://{self.host}:{self.port}/graphql", json={"query": _LOADED}, timeout=10).json()
            return bool(body["data"]["repositoriesOrError"].get("nodes"))
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return False


def alive(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those still running; a zombie has exited and only waits to be reaped."""
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


@dataclass
class DagsterDev:
    """A running `dagster dev`; `url` is the webserver's base URL (the UI, and `/graphql`)."""

    url: str
    home: Path  # DAGSTER_HOME, holding the repository's dagster.yaml
    env: dict[str, str]  # the variables set on top of the test's own environment
    log_path: Path
    executor: _LoadedWebserver = field(repr=False)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a GraphQL answer; an answer with errors fails the test with them."""
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def processes(self) -> list[psutil.Process]:
        """Every process started under this server, found by its DAGSTER_HOME, which each child inherits (so a
        worker whose parent died, reparented out of the tree, is found too): webserver, daemon, code server,
        run and step workers."""
        found = []
        for process in psutil.process_iter(["environ"]):
            environ = process.info["environ"] or {}
            if environ.get("DAGSTER_HOME") == str(self.home):
                found.append(process)
        return found

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if dagster dev outlasts READY_TIMEOUT_S (both mirakuru); then
        wait for processes still shutting down and kill those that outlast STRAGGLER_TIMEOUT_S."""
        started = self.processes()
        try:
            self.executor.stop()
        except ProcessFinishedWithError:
            pass  # dagster dev's own exit code says nothing about its children, which are waited for below
        deadline = time.monotonic() + STRAGGLER_TIMEOUT_S
        while (stragglers := alive(started + self.processes())) and time.monotonic() < deadline:
            time.sleep(0.1)
        for straggler in stragglers:
            straggler.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pipeline_env(emulator: EmulatorProcess, influxd: LocalInfluxd, root: Path) -> dict[str, str]:
    """A fresh DAGSTER_HOME, database and DuckDB file under `root`, against the test servers."""
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "OPENROUTER_API_KEY": emulator.management_key,
        "OPENROUTER_BASE_URL": emulator.base_url,
        "INFLUXDB_URL": influxd.url,
        "INFLUXDB_DATABASE": f"dev_{uuid.uuid4().hex[:8]}",
        "USAGE_DUCKDB_PATH": str(root / "usage.duckdb"),
    }


def start_dagster_dev(command: Sequence[str], env: dict[str, str], log_path: Path) -> DagsterDev:
    """Start `command` (`dagster dev` or `dg dev`) from the repository root on a free loopback port; return once
    its code location has loaded, or raise with the tail of its log. The caller must `stop()` it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:  # the children keep their own descriptors; no pipe that could fill
        executor = _LoadedWebserver([*command, "--host", "127.0.0.1", "--port", str(port)], url=f"{url}/server_info",
                                    method="GET", request_timeout=10, timeout=READY_TIMEOUT_S, sleep=0.5,
                                    cwd=str(REPO), envvars=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            executor.start()
        except ExecutorError as exc:  # mirakuru has killed the process group
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{' '.join(command)} did not come up: {exc}\nlog {log_path}:\n{tail}") from None
    return DagsterDev(url, Path(env["DAGSTER_HOME"]), env, log_path, executor)


@contextmanager
def running(command: Sequence[str], emulator: EmulatorProcess, influxd: LocalInfluxd,
            root: Path) -> Iterator[DagsterDev]:
    """`command` against the test servers, with its files under `root`, for the duration of a `with` block;
    leaving it fails if any process of the server outlived `stop()`."""
    server = start_dagster_dev(command, pipeline_env(emulator, influxd, root), root / "dagster_dev.log")
    try:
        yield server
    finally:
        server.stop()
    survivors = alive(server.processes())
    assert not survivors, f"{' '.join(command)} left processes running: {[p.cmdline() for p in survivors]}"
