"""The ledger on InfluxDB as people run it today, through a gate that serves only InfluxDB 3's (or 2's) v1 API
in front of a real influxd (`influx_gate.py`): a day exact and green twice with no DELETE, CREATE or DROP sent;
a duplicate an earlier fault left named by the check instead of deleted; a moved record refused by id; a
configuration the server cannot hold refused in one line; `influx-setup` printing the server's own commands
and verifying their result."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.cli import main
from usage_pipeline.influx.database_setup import setup_commands
from usage_pipeline.influx.errors import InfluxSetupError
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.points import to_line
from usage_pipeline.influx.server import InfluxServer, refusal
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.counts import api_day_counts
from usage_pipeline.reconcile import cost_agrees, full_capture, no_duplicates
from usage_pipeline_tests.conftest import capture, client_for, yesterday
from usage_pipeline_tests.influx_gate import run_gate, statements
from usage_pipeline_tests.test_influx_store import gen

TOKEN = "gate-token-not-to-be-seen"
CORE = InfluxServer("3.1.0", "Core")


@pytest.fixture(scope="module")
def gate(influxd: LocalInfluxd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("gate") / "statements.log"
    with run_gate(influxd.url, log) as url:
        yield url, log


@pytest.fixture()
def database(influxd: LocalInfluxd) -> Iterator[InfluxStore]:
    """A database made as `influxdb3 create database` would, straight on the influxd behind the gate (the
    gate never serves CREATE): the direct store, for what only a test or an earlier fault does."""
    direct = InfluxStore(InfluxSettings(url=influxd.url, database=f"gate_{uuid.uuid4().hex[:10]}"))
    direct.ensure_database()
    yield direct
    direct.query(f'DROP DATABASE "{direct.settings.database}"')
    direct.close()


def through(gate: tuple[str, Path], direct: InfluxStore) -> InfluxStore:
    return InfluxStore(InfluxSettings(url=gate[0], database=direct.settings.database, token=TOKEN))


def served_since(log: Path, start: int) -> list[tuple[str, str]]:
    return statements(log)[start:]


def test_a_day_through_influxdb_3s_v1_api_is_exact_and_green_twice_with_no_delete(
        emulator: EmulatorProcess, gate: tuple[str, Path], database: InfluxStore) -> None:
    day, start = yesterday(), len(statements(gate[1]))
    truth = emulator.truth(day)["count"]
    with through(gate, database) as store, client_for(emulator) as client:
        assert str(store.ensure_database([database.settings.database])) == "InfluxDB 3.1.0 Core"
        for run in range(2):
            recording = capture(emulator, store)
            assert recording.complete, recording.problems()
            assert recording.summary()["reused" if run else "fetched"] == truth
            counts = store.day_counts(day)
            assert counts.points == counts.distinct_ids == truth
            api = api_day_counts(client, day)
            for verdict in (no_duplicates(store, day), full_capture(store, api), cost_agrees(store, api)):
                assert verdict.passed, verdict.description
    seen = served_since(gate[1], start)
    assert seen and {verdict for verdict, _ in seen} == {"served"}, seen
    assert {statement.split()[0].upper() for _, statement in seen} <= {"SELECT", "SHOW"}


def test_on_influxdb_3_a_duplicate_an_earlier_fault_left_is_named_by_the_check_where_1x_repairs_it(
        emulator: EmulatorProcess, gate: tuple[str, Path], database: InfluxStore) -> None:
    day = yesterday()
    with through(gate, database) as store:
        assert capture(emulator, store).complete
        victim = sorted(store.day_ids(day))[7]
        (point,) = [p for p in store.stored(*day_ns(day)) if p.generation_id == victim]
        created = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=point.time_ns // 1000)
        # an earlier fault (another version of the ledger, a crash between a write and a delete) left a second
        # point carrying the same id under another provider tag: written past the gate, as that fault did
        database.write_lines([to_line(gen(victim, created, model=point.model, provider="Earlier Fault"), 0)])
        assert store.day_counts(day).points == store.day_counts(day).distinct_ids + 1

        start = len(statements(gate[1]))
        rerun = capture(emulator, store)
        assert rerun.complete and rerun.summary()["fetched"] == 1  # the id stored twice is not whole: refetched
        assert rerun.summary()["stale_points_deleted"] == 0
        assert {verdict for verdict, _ in served_since(gate[1], start)} == {"served"}  # no DELETE was tried
        verdict = no_duplicates(store, day)
        assert not verdict.passed and victim in verdict.description and "1 duplicate point(s)" in verdict.description
        assert verdict.metadata["duplicated_ids"] == victim

    repaired = capture(emulator, database)  # 1.x has DELETE: the same rerun repairs it
    assert repaired.summary()["stale_points_deleted"] == 1 and no_duplicates(database, day).passed


def test_on_influxdb_3_a_record_moved_upstream_is_refused_by_id_and_keeps_its_one_point(
        emulator: EmulatorProcess, gate: tuple[str, Path], database: InfluxStore) -> None:
    day = yesterday()
    with through(gate, database) as store:
        assert capture(emulator, store).complete
        moved = emulator.truth(day)["ids"][5]
        (before,) = [p for p in store.stored(*day_ns(day)) if p.generation_id == moved]
        emulator.override_records({moved: {"provider_name": "Another Provider"}})
        try:
            refreshed = capture(emulator, store, refresh=True)
        finally:
            emulator.clear_overrides()
        assert not refreshed.complete and list(refreshed.refused) == [moved]
        why = refreshed.refused[moved]
        assert "cannot delete the point stored as" in why and "InfluxDB 3.1.0 Core" in why
        assert [p for p in store.stored(*day_ns(day)) if p.generation_id == moved] == [before]
        assert no_duplicates(store, day).passed


def test_a_configuration_influxdb_3_core_cannot_hold_is_refused_in_one_line(
        gate: tuple[str, Path], database: InfluxStore) -> None:
    with through(gate, database) as store:
        six = [database.settings.database, *(f"openrouter_org{n}" for n in range(5))]
        with pytest.raises(InfluxSetupError) as caught:
            store.ensure_database(six)
        assert "holds at most 5 databases and the organisations need 6" in str(caught.value)
        with pytest.raises(InfluxSetupError, match="cannot hold database 'usage.ledger'"):
            store.ensure_database(["usage.ledger"])
        assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)
        store.ensure_database(six[:5])  # five it holds


@pytest.mark.parametrize(("version", "build", "command"), [
    ("3.1.0", "Core", "influxdb3 create database --retention-period 30d {db}"),
    ("v2.7.11", "OSS", "influx bucket create --name {db} --retention 30d"),
])
def test_influx_setup_on_2x_and_3x_prints_the_servers_command_then_verifies_it(
        influxd: LocalInfluxd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        version: str, build: str, command: str) -> None:
    db = f"setup_{uuid.uuid4().hex[:8]}"
    log = tmp_path / "statements.log"
    with run_gate(influxd.url, log, version=version, build=build) as url:
        for name, value in {"INFLUXDB_URL": url, "INFLUXDB_DATABASE": db, "INFLUXDB_RETENTION_DAYS": "30",
                            "INFLUXDB_TOKEN": TOKEN}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("USAGE_ORGANISATIONS", raising=False)
        assert main(["influx-setup"]) == 1  # not created yet: the command, and why it is not ready
        said = capsys.readouterr()
        assert said.out.splitlines() == [command.format(db=db)]
        assert len(said.err.splitlines()) == 1 and f"database {db!r} is not queryable" in said.err

        with InfluxStore(InfluxSettings(url=influxd.url, database=db)) as direct:
            direct.query(f'CREATE DATABASE "{db}"')  # what the operator's command does on their server
            assert main(["influx-setup"]) == 0
            said = capsys.readouterr()
            assert said.out.splitlines() == [command.format(db=db), (
                f"InfluxDB {version} {build}: database {db!r} of organisation default verified: queryable through "
                "the v1 API (retention: 30 days)")] and not said.err
            direct.query(f'DROP DATABASE "{db}"')
    assert TOKEN not in said.out + said.err
    assert {verdict for verdict, _ in statements(log)} == {"served"}  # setup sent nothing the server refuses


@pytest.mark.pure
def test_what_each_server_can_do_and_the_commands_that_make_its_database() -> None:
    assert [InfluxServer(v).major for v in ("1.6.7~rc0", "v2.7.4", "3.1.0", "unknown")] == [1, 2, 3, None]
    assert [(s.creates_databases, s.deletes, s.database_limit) for s in (
        InfluxServer("1.6.7~rc0"), InfluxServer("v2.7.4", "OSS"), CORE, InfluxServer("3.1.0", "Enterprise"))] == [
        (True, True, None), (False, True, None), (False, False, 5), (False, False, 100)]
    assert setup_commands(CORE, "openrouter_acme", None) == ["influxdb3 create database openrouter_acme"]
    assert setup_commands(InfluxServer("v2.7.4"), "a b", 0) == ["influx bucket create --name 'a b' --retention 0"]
    assert refusal(InfluxServer("1.6.7"), ["a.b"] * 9) is None  # 1.x holds any number and any name
    assert refusal(CORE, ["a", "b", "c", "d", "e"]) is None
    assert "at most 5" in (refusal(CORE, list("abcdef")) or "")
    assert refusal(InfluxServer("3.1.0", "Enterprise"), list("abcdef")) is None
    assert "_x" in (refusal(CORE, ["_x"]) or "") and "x" * 65 in (refusal(CORE, ["x" * 65]) or "")
    assert refusal(InfluxServer("unknown"), ["a.b"]) is None and not InfluxServer("unknown").deletes  # verified only


def day_ns(day: dt.date) -> tuple[int, int]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return int(start.timestamp()) * 10**9, int((start + dt.timedelta(days=1)).timestamp()) * 10**9
