"""The systemd units of `deploy/systemd/`, started as systemd starts them (`systemd_units`): an organisation's
receiver and drain, each from its unit's own ExecStart, EnvironmentFile= files filled from the shipped
examples, WorkingDirectory and KillSignal, against a real emulator and a real influxd. What a supervisor
needs of them is checked: the receiver answers /health and journals a pushed day into the organisation's own
journal, the drain stores those ids in the organisation's own database, SIGTERM ends both as systemd counts
success; a stopped journal exits to be restarted, and a missing secret exits once and is not restarted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.push import HAIKU, TOKEN, delivery, free_port
from usage_pipeline_tests.systemd_units import (
    UNITS,
    Service,
    Unit,
    environment_file,
    exits_cleanly,
    read_unit,
    restarts,
    started,
    under,
)
from usage_pipeline_tests.test_receiver import journaled
from usage_pipeline_tests.test_receiver_faults import LOCKED, write_lock

RECEIVE, DRAIN = UNITS / "usage-receive@.service", UNITS / "usage-drain@.service"
ORG, KEY_VARIABLE = "acme", "ACME_OPENROUTER_KEY"  # the instance, and the key variable acme.env.example names
INSTALLED = "/srv/usage_pipeline/.venv/bin/usage-pipeline"  # where the units expect the console script
# The console script pip installed beside the interpreter running the tests; `usage-pipeline` on PATH may be a
# wrapper (a pyenv shim) that needs the test's own environment, which a unit does not have.
CONSOLE_SCRIPT = Path(sysconfig.get_path("scripts")) / "usage-pipeline"
UNSET = "http://127.0.0.1:9"  # a service the test does not start; nothing reaches it


def filled(example: str, values: Mapping[str, str | None], extra: Mapping[str, str] | None = None) -> str:
    """The example environment file with the test's values put in (None: the example's own). It must name
    exactly the variables the test gives, so an example lacking one the units need fails here; `extra` are the
    test's own additions, not needed in production."""
    names = environment_file(UNITS / example)
    assert sorted(names) == sorted(values), f"{example} names {sorted(names)}"
    chosen = {name: names[name] if values[name] is None else values[name] for name in names}
    return "".join(f"{name}={value}\n" for name, value in {**chosen, **(extra or {})}.items())


@dataclass
class Deployment:
    root: Path
    port: int  # acme's RECEIVE_PORT
    journal: Path  # acme's journal, beside BROADCAST_JOURNAL_PATH

    def unit(self, template: Path) -> Unit:
        return read_unit(template, ORG)


def deploy(root: Path, *, influx_url: str = UNSET, database: str = "unused", openrouter_url: str = UNSET,
           key: str | None = None, token: str | None = TOKEN) -> Deployment:
    """Install under `root` what docs/push.md has an operator install: the console script at the units' path,
    an organisations file of two (so `--org %i` must pick), the shared and acme's environment files from the
    examples (mode 0600), and the StateDirectory= systemd makes. A None key or token: the example's (empty)."""
    installed = under(root, INSTALLED)
    installed.parent.mkdir(parents=True)
    shutil.copy2(CONSOLE_SCRIPT, installed)  # WorkingDirectory=/srv/usage_pipeline now exists too
    state = under(root, "/var/lib") / read_unit(RECEIVE, ORG).one("Service", "StateDirectory")
    state.mkdir(parents=True, mode=0o700)
    etc = under(root, "/etc/usage_pipeline")
    etc.mkdir(parents=True)
    organisations = etc / "organisations.yaml"
    organisations.write_text(yaml.safe_dump({"organisations": [
        {"name": ORG, "key_variable": KEY_VARIABLE, "influxdb_database": database, "base_url": openrouter_url},
        {"name": "globex", "key_variable": "GLOBEX_OPENROUTER_KEY"}]}))
    port = free_port()
    files = {"env": filled("env.example", {"USAGE_ORGANISATIONS": str(organisations), "INFLUXDB_URL": influx_url,
                                           "BROADCAST_JOURNAL_PATH": str(state / "broadcast.sqlite3")},
                           extra={"BROADCAST_DRAIN_LAG_S": "0.2"}),  # ids due at once, not after 15 s
             f"{ORG}.env": filled(f"{ORG}.env.example", {"RECEIVE_PORT": str(port), "BROADCAST_TOKEN": token,
                                                         KEY_VARIABLE: key})}
    for name, text in files.items():
        with os.fdopen(os.open(etc / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(text)
    return Deployment(root, port, state / f"broadcast.{ORG}.sqlite3")


def until(condition: Callable[[], Any], service: Service, what: str, guard_s: float = 120.0) -> Any:
    """Poll `condition` until it is truthy, waiting on the service's process between tries; fail with its log if
    the process ends first (or after `guard_s`, so a broken unit fails rather than hangs)."""
    deadline = time.monotonic() + guard_s
    while not (found := condition()):
        assert service.process.poll() is None, f"{service.unit.name} exited before {what}:\n{service.said()}"
        assert time.monotonic() < deadline, f"no {what}:\n{service.said()}"
        try:
            service.process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    return found


def health(port: int) -> dict[str, Any] | None:
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    except requests.ConnectionError:
        return None
    return dict(answer.json()) if answer.status_code == 200 else None


def test_the_units_read_strictly_and_journal_where_they_may_write() -> None:
    """Every key of both units is one this suite knows (see systemd_units.KEYS), and under ProtectSystem=strict
    the example's BROADCAST_JOURNAL_PATH lies in their StateDirectory=, the one path they may write."""
    units = [read_unit(template, ORG) for template in (RECEIVE, DRAIN)]
    journal = Path(environment_file(UNITS / "env.example")["BROADCAST_JOURNAL_PATH"])
    for unit in units:
        assert unit.one("Service", "ProtectSystem") == "strict"
        assert journal.parent == Path("/var/lib") / unit.one("Service", "StateDirectory"), unit.name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verifies_both_units(tmp_path: Path) -> None:
    """systemd's own reading, under a root holding the host's unit directory (the targets the units order
    against), the two templates and the console script at the units' path: no warning, no error."""
    host_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    root = tmp_path / "root"
    shutil.copytree(host_units, under(root, "/usr/lib/systemd/system"), symlinks=True)
    installed = under(root, "/etc/systemd/system")
    installed.mkdir(parents=True)
    for template in (RECEIVE, DRAIN):
        shutil.copy(template, installed)
    under(root, INSTALLED).parent.mkdir(parents=True)
    shutil.copy2(CONSOLE_SCRIPT, under(root, INSTALLED))
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"usage-receive@{ORG}.service",
                           f"usage-drain@{ORG}.service"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_an_organisations_receiver_and_drain_run_as_their_units_and_stop_on_sigterm(
        emulator: EmulatorProcess, influxd: LocalInfluxd, store: InfluxStore, tmp_path: Path) -> None:
    site = deploy(tmp_path / "root", influx_url=influxd.url, database=store.settings.database,
                  openrouter_url=emulator.base_url, key=emulator.management_key)
    receive_unit, drain_unit, day = site.unit(RECEIVE), site.unit(DRAIN), yesterday()
    with started(receive_unit, site.root, tmp_path / "receive.log") as receiver, \
            started(drain_unit, site.root, tmp_path / "drain.log") as drainer:
        until(lambda: health(site.port), receiver, "/health")
        pushed = emulator.broadcast_day(day, f"http://127.0.0.1:{site.port}/v1/traces", token=TOKEN, limit=3,
                                        connection_test=True)
        delivered = set(pushed["delivered_ids"])
        assert pushed["connection_test"] == {"status": 200} and len(delivered) == 3, pushed
        assert set(journaled(site.journal)) == delivered  # acme's own journal: --org %i reached the command
        until(lambda: delivered <= store.day_ids(day), drainer, "the pushed ids in acme's database")
        stopped = {service.unit.name: service.stop() for service in (receiver, drainer)}
    assert stopped == {receive_unit.name: 0, drain_unit.name: 0}
    assert exits_cleanly(receive_unit, stopped[receive_unit.name])
    assert exits_cleanly(drain_unit, stopped[drain_unit.name])
    assert site.journal.stat().st_mode & 0o777 == 0o600  # UMask=0077: the journal is the service user's alone
    said = {service.unit.name: service.said() for service in (receiver, drainer)}
    assert f"draining {site.journal} into InfluxDB database {store.settings.database!r} ({ORG})" in said[
        drain_unit.name]
    for text in said.values():
        assert "Traceback" not in text and TOKEN not in text and emulator.management_key not in text, text


def test_a_receiver_whose_journal_stops_exits_to_be_restarted(tmp_path: Path) -> None:
    site = deploy(tmp_path / "root")
    unit = site.unit(RECEIVE)
    with started(unit, site.root, tmp_path / "receive.log") as receiver:
        until(lambda: health(site.port), receiver, "/health")
        with write_lock(site.journal):  # another process holds the journal past the writer's patience
            answer = requests.post(f"http://127.0.0.1:{site.port}/v1/traces",
                                   json=delivery(HAIKU, "gen-1790000030-unitJournalStopped"),
                                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            assert answer.status_code == 503 and LOCKED in answer.json()["error"], answer.text
            returncode = receiver.process.wait(timeout=60)
    assert returncode == 1 and restarts(unit, returncode), receiver.said()
    assert f"the journal writer stopped ({LOCKED}); exiting to be restarted" in receiver.said()


@pytest.mark.parametrize(("template", "variable"), [(RECEIVE, "BROADCAST_TOKEN"), (DRAIN, KEY_VARIABLE)],
                         ids=["receive", "drain"])
def test_a_secret_left_empty_stops_the_unit_once_naming_it(tmp_path: Path, template: Path, variable: str) -> None:
    """acme.env.example as shipped (its secrets empty): one line naming the variable, exit 2, not restarted,
    since a restart would read the same file."""
    site = deploy(tmp_path / "root", token=None, key=None)
    unit = site.unit(template)
    with started(unit, site.root, tmp_path / "unit.log") as service:
        returncode = service.process.wait(timeout=120)
    assert returncode == 2 and not exits_cleanly(unit, returncode) and not restarts(unit, returncode)
    command = "receive" if template == RECEIVE else "drain"
    said = service.said()
    assert said.startswith(f"usage-pipeline {command}: {variable} is not set: ") and said.count("\n") == 1, said
