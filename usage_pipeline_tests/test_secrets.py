"""No key, token or URL password in any error, log, metadata or stored run history: each error path runs
for real (`dagster asset materialize` in its own process, a Dagster instance on disk), then the run's
output, the instance directory and its compute logs are searched for the marked secrets."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.defs.organisations import add_organisations
from usage_pipeline.influx.local_server import LocalInfluxd

pytestmark = pytest.mark.slow  # real `dagster dev` / Dagster CLI processes

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-or-v1-MARKEDKEY7f3a0c"
WRONG_KEY = "sk-or-v1-MARKEDWRONG55e1"
TOKEN = "tok-MARKEDTOKEN9c2e11"
PASSWORD = "pw-MARKEDPASS41d0aa"
MARKS = (KEY, WRONG_KEY, TOKEN, PASSWORD, "MARKED")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"  # the emulator's own log is not ours to search
    with run_emulator(seed=51, generations_per_day=200, days=1, log_path=log,
                      extra_args=["--management-key", KEY]) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def materialize(home: Path, emulator: EmulatorProcess, influxd: LocalInfluxd,
                **overrides: str) -> subprocess.Popen[bytes]:
    """`dagster asset materialize` of yesterday in its own process, its output in files under `home`'s parent."""
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENROUTER_", "INFLUXDB_"))}
    env.update({"DAGSTER_HOME": str(home), "OPENROUTER_BASE_URL": emulator.base_url, "OPENROUTER_API_KEY": KEY,
                "OPENROUTER_GIVE_UP_AFTER_S": "3", "INFLUXDB_URL": influxd.url, "INFLUXDB_DATABASE": "secrets",
                "USAGE_DUCKDB_PATH": str(home / "usage.duckdb"), **overrides})
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with DagsterInstance.from_config(str(home)) as instance:  # as the daemon's sensor would
        add_organisations(instance, ["default"])
    with (home.parent / "stdout").open("wb") as stdout, (home.parent / "stderr").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "usage_pipeline.definitions",
             "--select", "influxdb/generations", "--partition", f"{day.isoformat()}|default"],
            cwd=REPO, env=env, stdout=stdout, stderr=stderr)


@dataclass(frozen=True)
class Done:
    home: Path
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture(scope="module")
def runs(emulator: EmulatorProcess, influxd: LocalInfluxd,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Done]:
    """Every case's run, started at once (each is a Dagster CLI process that mostly waits) and waited for."""
    root = tmp_path_factory.mktemp("secrets")
    started = {case: (root / str(n), materialize(root / str(n) / "dagster_home", emulator, influxd, **overrides))
               for n, (case, (overrides, _, _)) in enumerate(CASES.items())}
    try:
        return {case: Done(folder / "dagster_home", process.wait(timeout=300), (folder / "stdout").read_bytes(),
                           (folder / "stderr").read_bytes())
                for case, (folder, process) in started.items()}
    finally:
        for _, process in started.values():
            process.kill()  # only one still running after a timeout; the others have exited
            process.wait()


def leaks(home: Path, done: Done) -> list[str]:
    """Where any marked secret appears: the run's output, or any file under the instance directory."""
    found = [f"{stream}: {mark}" for stream, text in (("stdout", done.stdout), ("stderr", done.stderr))
             for mark in MARKS if mark.encode() in text]
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(home)}: {mark}" for mark in MARKS if mark.encode() in data]
    return found


CASES = {
    "key with a trailing newline ($(cat keyfile))": ({"OPENROUTER_API_KEY": KEY + "\n"}, True, ""),
    "key with a space inside": ({"OPENROUTER_API_KEY": KEY + " x"}, False, "OPENROUTER_API_KEY must be"),
    "a wrong key": ({"OPENROUTER_API_KEY": WRONG_KEY}, False, "401"),
    "token with a trailing newline": ({"INFLUXDB_TOKEN": TOKEN + "\n"}, True, ""),
    "token with a newline inside": ({"INFLUXDB_TOKEN": TOKEN + "\nX"}, False, "INFLUXDB_TOKEN must be"),
    "password in the InfluxDB URL, server down": (
        {"INFLUXDB_URL": f"http://ledger:{PASSWORD}@127.0.0.1:{closed_port()}"}, False, "unreachable"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_no_secret_reaches_output_history_or_compute_logs(case: str, runs: dict[str, Done]) -> None:
    _, succeeds, says = CASES[case]
    done = runs[case]
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert (done.returncode == 0) is succeeds, output[-3000:]
    assert says in output
    assert list(done.home.rglob("*.db")) or list(done.home.rglob("*.sqlite")), "the run history must be on disk"
    assert leaks(done.home, done) == []
