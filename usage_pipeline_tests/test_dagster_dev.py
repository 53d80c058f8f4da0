"""A real `dg dev` (webserver + daemon + code server): it shows the definitions, and a 2-day UI-style
backfill runs one run per day, each with its own green checks.

`dg dev` builds the workspace from `[tool.dg]` and then serves it with the very function `dagster dev` runs,
so this one server proves the dg entry point end to end; `dagster dev -w workspace.yaml` is started by
test_dead_runs (a run launched from its GraphQL API) and its workspace is loaded in test_cli.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from dagster import DagsterEventType, DagsterInstance

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.runs.tags import run_day
from usage_pipeline_tests.browser import PageVisit, open_page
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import DagsterDev, alive, pipeline_env, start_dagster_dev

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow  # a real `dg dev`


@pytest.fixture(scope="module")
def dg_dev(emulator: EmulatorProcess, influxd: LocalInfluxd,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """One `dg dev` for the module; after it stops, no process it started (run workers included) is left."""
    dg = shutil.which("dg")
    assert dg, "dg (dagster-dg-cli) is installed with the project"
    root = tmp_path_factory.mktemp("dg_dev")
    server = start_dagster_dev([dg, "dev"], pipeline_env(emulator, influxd, root), root / "dg_dev.log")
    try:
        yield server
    finally:
        server.stop()
    assert not alive(server.processes())


def shown_definitions(server: DagsterDev) -> dict[str, Any]:
    data = server.graphql("""{ repositoriesOrError { ... on RepositoryConnection { nodes {
        jobs { name } schedules { name cronSchedule } sensors { name }
        assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
    } } } }""")
    repo = data["repositoriesOrError"]["nodes"][0]
    return {
        "jobs": {j["name"] for j in repo["jobs"]},
        "schedules": {s["name"]: s["cronSchedule"] for s in repo["schedules"]},
        "sensors": {s["name"] for s in repo["sensors"]},
        "checks": {tuple(a["assetKey"]["path"]): {c["name"]: c["blocking"]
                                                  for c in a["assetChecksOrError"].get("checks", [])}
                   for a in repo["assetNodes"]},
    }


def test_dg_dev_shows_assets_checks_job_schedule_and_sensor(dg_dev: DagsterDev) -> None:
    shown = shown_definitions(dg_dev)
    assert "daily_ledger" in shown["jobs"]
    assert shown["schedules"]["daily_ledger_schedule"] == "0 2 * * *"
    assert "recapture_failed_days" in shown["sensors"]
    assert {("influxdb", "generations"), ("duckdb", "daily_usage")} <= set(shown["checks"])
    assert shown["checks"][("influxdb", "generations")] == {
        "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": False}


def test_a_two_day_backfill_runs_one_run_per_day_with_green_checks_and_the_asset_page_plots_them(
        dg_dev: DagsterDev, tmp_path: Path) -> None:
    days = [(yesterday() - dt.timedelta(days=n)).isoformat() for n in (1, 0)]
    launched = dg_dev.graphql("""
        mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"params": {"partitionNames": days,
                    "assetSelection": [{"path": ["influxdb", "generations"]}, {"path": ["duckdb", "daily_usage"]}]}})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]

    deadline = time.monotonic() + 420
    status = None
    while time.monotonic() < deadline:
        status = dg_dev.graphql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { status } ... on PythonError { message } } }""",
            {"id": backfill_id})["partitionBackfillOrError"]
        if status.get("status") in {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}:
            break
        time.sleep(3)
    assert status and status.get("status") in {"COMPLETED", "COMPLETED_SUCCESS"}, status

    instance = DagsterInstance.from_config(str(dg_dev.home))
    try:
        runs = instance.get_runs()
        backfill_runs = [r for r in runs if r.tags.get("dagster/backfill") == backfill_id]
        assert sorted(str(run_day(r.tags)) for r in backfill_runs) == days  # one run per day
        for run in backfill_runs:
            assert run.status.value == "SUCCESS", run.run_id
            evaluations = [e.dagster_event.event_specific_data
                           for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]
            assert {e.check_name: e.passed for e in evaluations} == {
                "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": True}
            assert {e.metadata["day"].value for e in evaluations} == {str(run_day(run.tags))}
    finally:
        instance.dispose()

    store = InfluxStore(InfluxSettings(url=dg_dev.env["INFLUXDB_URL"],
                                       database=dg_dev.env["INFLUXDB_DATABASE"]))
    with duckdb.connect(dg_dev.env["USAGE_DUCKDB_PATH"], read_only=True) as conn:
        totals = dict(conn.execute("SELECT strftime(day, '%Y-%m-%d'), requests FROM daily_totals").fetchall())
    for day in days:
        counts = store.day_counts(dt.date.fromisoformat(day))
        assert counts.points == counts.distinct_ids == totals[day] > 0

    plots = asset_page_plots(dg_dev, ["duckdb", "daily_usage"], ["spend_usd", "requests", "openrouter_requests"])
    (tmp_path / "daily_usage_plots.png").write_bytes(plots.screenshot)
    print(f"screenshot of the asset page: {tmp_path / 'daily_usage_plots.png'}")
    assert not plots.console_errors and not plots.page_errors, (plots.console_errors, plots.page_errors)
    assert not plots.refused_requests, plots.refused_requests  # the UI needs nothing beyond its own server
    data_pixels = plots.evaluated
    assert set(data_pixels) == {"spend_usd", "requests", "openrouter_requests"}, data_pixels  # a plot per number
    assert all(n > 50 for n in data_pixels.values()), data_pixels  # each draws its line over the two days
    assert plots.pixels.distinct_colours > 100 and plots.pixels.background_share < 0.97, plots.pixels


PLOT_PIXELS = """(titles) => {
  // Each titled chart's canvas: how many of its pixels are the plotted line's colour (Dagster draws data in
  // blue-violet; axes, grid and labels are grey), i.e. whether the chart has data, not only axes.
  const found = {};
  for (const title of titles) {
    const heading = [...document.querySelectorAll('div, span')].find(e => e.childElementCount === 0
                                                                      && e.textContent.trim() === title);
    let box = heading;
    while (box && !box.querySelector('canvas')) box = box.parentElement;
    const canvas = box && box.querySelector('canvas');
    if (!canvas) continue;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let data = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] > 128 && pixels[i + 2] - Math.max(pixels[i], pixels[i + 1]) > 60) data++;
    }
    found[title] = data;
  }
  return found;
}"""


def asset_page_plots(server: DagsterDev, asset: list[str], titles: list[str]) -> PageVisit:
    """The asset's Overview page in headless Chromium with its metadata shown as Plots (one chart per
    numeric metadata key, across partitions); `evaluated` maps each found title to its chart's data pixels."""

    def show_plots(page: Page) -> None:
        page.get_by_role("button", name="Plots").click(timeout=60_000)
        page.locator("canvas").nth(len(titles) - 1).wait_for(timeout=60_000)  # (the UI's CSP forbids eval)
        page.wait_for_timeout(1500)  # Chart.js animates the lines in

    server.graphql("mutation { setNuxSeen }")  # no one-time "join the community" dialog over the page
    return open_page(f"{server.url}/assets/{'/'.join(asset)}?view=overview", allow_local_http=True,
                     interact=show_plots, evaluate=f"({PLOT_PIXELS})({json.dumps(titles)})",
                     width=1400, height=1000, timeout_s=90)
