"""What the capture's materialization says about push: nothing unless the organisation's journal holds a delivery
of that day (then its coverage is one of the charted numbers), and never more than the dozen charted numbers."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection
from pathlib import Path

import pytest

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.coverage import push_coverage
from usage_pipeline.broadcast.spans import PushedSpan
from usage_pipeline.defs.capture_metadata import PLOTTED
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.test_pipeline import ALL_GREEN, Ledger, checks, details

DAY = dt.date(2026, 11, 21)


def journaled(path: Path, day: dt.date, ids: Collection[str]) -> None:
    """`ids` delivered by push, each announced at noon of `day`, as the receiver journals them."""
    noon_ns = int(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp()) * 10**9
    spans = [PushedSpan(gen_id, noon_ns, None, None, None, None, None, False) for gen_id in ids]
    connection = journal.connect(path)
    try:
        connection.executemany(journal.UPSERT, journal._rows(spans, time.time(), 0.0))  # noqa: SLF001
    finally:
        connection.close()


def never_read() -> Collection[str]:
    raise AssertionError("the day's stored ids were read though push has nothing of the day")


@pytest.mark.pure
def test_without_a_journal_nothing_is_said_about_push_and_none_is_made(tmp_path: Path) -> None:
    path = tmp_path / "broadcast.sqlite3"
    assert push_coverage(path, DAY, never_read) == {}
    assert not path.exists()


@pytest.mark.pure
def test_a_journal_without_a_delivery_of_the_day_says_nothing_about_it(tmp_path: Path) -> None:
    """Push set up after the day, or the day's ids pruned: no coverage can be known, so none is stated."""
    path = tmp_path / "broadcast.sqlite3"
    journaled(path, DAY + dt.timedelta(days=1), ["gen-later"])
    assert push_coverage(path, DAY, never_read) == {}
    assert push_coverage(path, DAY + dt.timedelta(days=1), lambda: {"gen-later"})["push_coverage"] == 1.0


@pytest.mark.pure
def test_a_day_push_delivered_has_its_coverage_and_the_ids_it_missed(tmp_path: Path) -> None:
    path = tmp_path / "broadcast.sqlite3"
    journaled(path, DAY, ["gen-a", "gen-b", "gen-x"])
    pushed = push_coverage(path, DAY, lambda: {"gen-a", "gen-b", "gen-c", "gen-d"})
    assert pushed["push_coverage"] == 0.5 and pushed["push_missed_ids"] == ["gen-c", "gen-d"]
    assert pushed["push_not_in_day_ids"] == ["gen-x"] and pushed["push_ids"] == 3


def test_a_day_push_delivered_charts_its_coverage_beside_the_capture_and_nothing_else(
        emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> None:
    """Through the daily_ledger job with a journal holding half the day: `push_coverage` is a charted number, the
    ids push missed are in `details`, and the numbers stay the dozen an operator charts."""
    ledger = Ledger(emulator, influxd, tmp_path)
    day = yesterday() - dt.timedelta(days=1)
    ids = sorted(ledger.truth(day)["ids"])
    journaled(tmp_path / "broadcast.sqlite3", day, ids[::2])  # the implicit organisation's journal
    result = ledger.run(day)
    assert result.success and checks(result) == ALL_GREEN
    meta = result.asset_materializations_for_node("influxdb__generations")[0].metadata
    numbers = {k for k, v in meta.items() if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)}
    assert "push_coverage" in numbers and numbers <= set(PLOTTED) and len(PLOTTED) <= 12, numbers
    assert meta["push_coverage"].value == pytest.approx(len(ids[::2]) / len(ids), abs=1e-6)
    assert details(meta)["push"]["push_missed"] == len(ids) - len(ids[::2])
    assert {k for k, v in meta.items() if k not in numbers} == {"organisation", "day", "influxdb_database", "details"}
