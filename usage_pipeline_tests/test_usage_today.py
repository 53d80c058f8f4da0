"""`usage_today` alone (DuckDB, no servers): which days are open, the hourly rows against pandas, and the
nightly's exact day replacing its provisional rows in the same transaction."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd

from usage_pipeline.duck.publish import replace_day
from usage_pipeline.duck.today import TODAY_TABLE, captured_days, hourly_rows, open_days, replace_open_days
from usage_pipeline_tests.test_summaries import as_chunks, ledger_frame, summary_of

TODAY = dt.date(2026, 12, 2)
YESTERDAY = TODAY - dt.timedelta(days=1)


def test_the_open_days_run_from_the_last_captured_day_to_today_and_at_most_three_back() -> None:
    assert open_days([YESTERDAY], TODAY) == [TODAY]
    assert open_days([YESTERDAY - dt.timedelta(days=1)], TODAY) == [YESTERDAY, TODAY]  # before its 02:00 run
    assert open_days([], TODAY) == [TODAY - dt.timedelta(days=n) for n in (2, 1, 0)]


def test_hourly_rows_are_the_ledgers_sums_per_hour_model_key_and_user_all_provisional() -> None:
    frame = ledger_frame(TODAY, 3_000, seed=5)
    built = dt.datetime(2026, 12, 2, 15, 0)
    rows = hourly_rows([TODAY], lambda day: as_chunks(frame, 700), built)
    frame = frame.assign(hour=pd.to_datetime(frame["time"], unit="ns").dt.floor("h"))
    expected = frame.groupby(["hour", "model", "api_key", "external_user"], dropna=False).agg(
        requests=("generation_id", "count"), usage=("usage", "sum")).reset_index()
    assert int(rows["requests"].sum()) == len(frame) and len(rows) == len(expected)
    assert abs(float(rows["usage"].sum()) - float(expected["usage"].sum())) < 1e-9
    assert rows["provisional"].all() and (rows["day"] == pd.Timestamp(TODAY)).all()


def test_the_nightly_exact_day_replaces_its_provisional_rows(tmp_path: Path) -> None:
    built = dt.datetime(2026, 12, 2, 1, 0)
    rows = hourly_rows([YESTERDAY, TODAY], lambda day: as_chunks(ledger_frame(day, 500, seed=day.day), 200), built)
    with duckdb.connect(str(tmp_path / "store.duckdb")) as conn:
        replace_open_days(conn, rows)
        assert captured_days(conn, YESTERDAY) == []
        replace_day(conn, summary_of(YESTERDAY, 500, seed=YESTERDAY.day))
        left = conn.execute(f"SELECT DISTINCT day FROM {TODAY_TABLE} ORDER BY day").fetchall()
        assert [day for (day,) in left] == [TODAY]  # yesterday's provisional rows went with its exact summary
        assert captured_days(conn, YESTERDAY) == [YESTERDAY]
        assert open_days(captured_days(conn, YESTERDAY), TODAY) == [TODAY]
