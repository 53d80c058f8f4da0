"""The live API's model names through the daily_ledger job: `/generation` answers dated permaslugs, `/activity`
slugs beside permaslugs and `YYYY-MM-DD 00:00:00` dates (the emulator's default, live-shaped answers). The day is
exact and green twice, the summaries carry slug and label, and one deleted point turns the capture check red
with a per-model diff naming both the slug and the permaslug."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import requests

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.test_pipeline import ALL_GREEN, Ledger, capture_check, checks, summarized


@pytest.fixture
def ledger(emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path) -> Ledger:
    return Ledger(emulator, influxd, tmp_path)


def _live_shapes(ledger: Ledger, day: dt.date) -> tuple[str, str]:
    """One record's model and one /activity row's date, as the emulator answers by default."""
    emulator = ledger.emulator
    auth = {"Authorization": f"Bearer {emulator.management_key}"}
    gen_id = ledger.truth(day)["ids"][0]
    record = requests.get(f"{emulator.base_url}/generation", params={"id": gen_id}, headers=auth, timeout=30)
    activity = requests.get(f"{emulator.base_url}/activity", params={"date": day.isoformat()}, headers=auth,
                            timeout=30)
    record.raise_for_status()
    activity.raise_for_status()
    return record.json()["data"]["model"], activity.json()["data"][0]["date"]


def test_a_live_shaped_day_is_exact_twice_and_a_deleted_point_names_slug_and_permaslug(ledger: Ledger) -> None:
    day = yesterday() - dt.timedelta(days=1)
    truth = ledger.truth(day)
    catalogue = truth["models"]
    slug_of = {m["permaslug"]: m["slug"] for m in catalogue} | {m["slug"]: m["slug"] for m in catalogue}
    label_of = {m["slug"]: m["label"] for m in catalogue}
    model, date = _live_shapes(ledger, day)
    permaslugs = {m["permaslug"] for m in catalogue if m["permaslug"] != m["slug"]}
    assert model in {m["permaslug"] for m in catalogue} and date == f"{day.isoformat()} 00:00:00"

    for run in (ledger.run(day), ledger.run(day)):
        assert run.success and checks(run) == ALL_GREEN and summarized(run)
        counts = ledger.store.day_counts(day)
        assert counts.points == counts.distinct_ids == truth["count"]
    stored = ledger.store.ids_by_model(day)
    assert permaslugs & set(stored), "the day must hold dated permaslugs that differ from their slugs"
    assert set(stored) <= {m["permaslug"] for m in catalogue}  # stored exactly as /generation sent them
    by_slug: dict[str, int] = {}
    for name, count in stored.items():
        by_slug[slug_of[name]] = by_slug.get(slug_of[name], 0) + count
    assert by_slug == truth["by_model"]

    with duckdb.connect(str(ledger.duckdb_path), read_only=True) as conn:
        rows = conn.execute("SELECT model, model_slug, model_label, requests FROM daily_usage WHERE day = ?",
                            [day]).fetchall()
        (filtered,) = conn.execute("SELECT sum(requests) FROM daily_usage_by_provider WHERE day = ? AND "
                                   "model_slug = 'openai/gpt-4.1'", [day]).fetchall()[0]
    assert {r[0] for r in rows} == set(stored)
    assert all(r[1] == slug_of[r[0]] and r[2] == label_of[r[1]] for r in rows), rows
    assert filtered == truth["by_model"]["openai/gpt-4.1"]  # analysts filter by slug, not knowing the date

    row = next(frame for frame in ledger.store.iter_day_frames(day, chunk_size=500)
               if frame["model"].isin(permaslugs).any())
    victim = row[row["model"].isin(permaslugs)].iloc[0]
    ledger.store.delete_point(victim["model"], victim["provider"], int(victim["time"]))
    red = ledger.verify_only(day)
    assert checks(red)["full_capture_matches_openrouter"] is False and not summarized(red)
    evaluation = capture_check(red)
    diff, slug = str(evaluation.metadata["diff"].value), slug_of[victim["model"]]
    (line,) = [line for line in diff.splitlines() if line.startswith(f"| {victim['model']} |")]
    assert f"| {slug} |" in line and f"| {label_of[slug]} |" in line and line.endswith("| -1 |")
    assert len([line for line in diff.splitlines() if line.endswith("| -1 |") or line.endswith("| 1 |")]) == 1
    assert f"{slug} ({victim['model']})" in str(evaluation.description)
