"""A store from before organisations keeps its data and passes its checks after the upgrade.

Before organisations there was one key (OPENROUTER_API_KEY), one InfluxDB database (INFLUXDB_DATABASE) and
DuckDB tables without `org`. Without USAGE_ORGANISATIONS the upgraded pipeline is that one organisation,
`default`: the same database (its points reused, none fetched again) and the old rows kept as `default`'s.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.duck.publish import store_path_for
from usage_pipeline.duck.summaries import SUMMARY_TABLES
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.test_pipeline import ALL_GREEN, Ledger, checks


@pytest.fixture
def ledger(emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> Ledger:
    return Ledger(emulator, influxd, tmp_path)


def _as_before_organisations(path: str) -> None:
    """The store as the previous version left it: no `org` in any table, plus an older day's totals."""
    with duckdb.connect(path) as conn:
        for table in SUMMARY_TABLES:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN org")
        conn.execute("INSERT INTO daily_totals SELECT * REPLACE (day - INTERVAL 7 DAY AS day) FROM daily_totals")


def test_an_old_single_organisation_store_keeps_its_data_and_passes_its_checks(ledger: Ledger) -> None:
    day = yesterday()
    assert ledger.run(day).success  # the day as the previous version stored it (the same points)
    store = str(store_path_for(ledger.duckdb_path))
    _as_before_organisations(store)
    points = ledger.store.day_counts(day)

    upgraded = ledger.run(day)  # no USAGE_ORGANISATIONS: the implicit organisation, INFLUXDB_DATABASE itself
    assert upgraded.success and checks(upgraded) == ALL_GREEN
    (capture,) = upgraded.asset_materializations_for_node("influxdb__generations")
    meta = capture.metadata
    assert meta["organisation"].value == "default" and meta["influxdb_database"].value == ledger.database
    assert meta["fetched"].value == 0 and meta["reused"].value == points.distinct_ids  # kept, not fetched again
    assert ledger.store.day_counts(day) == points  # no point added beside the old ones

    with duckdb.connect(str(ledger.duckdb_path), read_only=True) as conn:
        rows = conn.execute("SELECT org, day, requests FROM daily_totals ORDER BY day").fetchall()
        per_model = conn.execute("SELECT DISTINCT org FROM daily_usage").fetchall()
    older = day - dt.timedelta(days=7)
    assert rows == [("default", older, points.distinct_ids), ("default", day, points.distinct_ids)]  # one each
    assert per_model == [("default",)]
