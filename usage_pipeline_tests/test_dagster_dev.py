"""A real `dg dev` (webserver + daemon + code server) with two organisations: it shows the definitions, and a
UI-style backfill of both organisations by two days runs one run per organisation-day, each with its own
green checks, except the one organisation-day whose record OpenRouter never answers. Beside it a daily_ledger
run of a third day has a red check; the checks' evaluations are per organisation-day, and the check's and the
asset's Partitions views in Chromium show each organisation-day red or green.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
import requests
from dagster import DagsterInstance

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.alerts import HEADLINES, LATE, deadline_of
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.settings import setting
from usage_pipeline_tests.alert_receiver import (
    AlertReceiver,
    KeyBudget,
    alert_receiver,
    key_budget_crossed_once,
    sensor_state,
    set_sensor_cursor,
    wait_for_tick_after,
)
from usage_pipeline_tests.browser import PageVisit, open_page
from usage_pipeline_tests.check_grid import (
    CHECKS,
    GENERATIONS,
    check_executions,
    launch_daily_ledger,
    partition_counts,
    partition_grids,
    wait_for_run,
)
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import DagsterDev, alive, pipeline_env, start_dagster_dev
from usage_pipeline_tests.org_backfill import (
    GREEN,
    backfill_runs,
    keys,
    launch_backfill,
    one_run_per_organisation_at_a_time,
    organisations_env,
    second_organisation,
    wait_for_backfill,
    wait_for_organisations,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow  # a real `dg dev`
ALERT_SENSORS = ("alert_on_failed_checks", "alert_on_given_up_days", "alert_on_late_days")  # issue23-alerts


@pytest.fixture(scope="module")
def globex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with second_organisation(tmp_path_factory.mktemp("globex")) as server:
        yield server


# --- issue23-alerts: the alerts' receiver and acme's budget (fixtures of their own) -------------------------
@pytest.fixture(scope="module")
def receiver() -> Iterator[AlertReceiver]:
    with alert_receiver() as server:
        yield server


@pytest.fixture(scope="module")
def acme_key_budget(emulator: EmulatorProcess) -> KeyBudget:
    """A budget that one of acme's API keys crosses on one of the backfill's two days."""
    return key_budget_crossed_once(backfill_days(), 2000, 7, emulator.truth)  # the session emulator's


def backfill_days() -> list[dt.date]:
    return [yesterday() - dt.timedelta(days=n) for n in (1, 0)]


def alerts_env(receiver: AlertReceiver, budget: KeyBudget) -> tuple[dict[str, str], dict[str, str]]:
    """The environment and acme's budgets: alerts posted to `receiver`; the recapture sensor gives up after one
    run (so the backfill's red day is one it gave up on); a capture deadline 12 h from now, so none passes while
    the module runs (a test moves the late sensor's cursor back instead)."""
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)).strftime("%H:%M")
    budgets = {"acme": f'{{daily_usd: 100000, api_keys: {{"{budget.key}": {budget.usd}}}, users: {{nobody: 1}}}}'}
    return {"USAGE_ALERT_WEBHOOK_URL": receiver.url, "USAGE_RECAPTURE_MAX_ATTEMPTS": "1",
            "USAGE_CAPTURE_DEADLINE_UTC": deadline}, budgets
# --- end issue23-alerts ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dg_dev(emulator: EmulatorProcess, globex: EmulatorProcess, influxd: LocalInfluxd,
           tmp_path_factory: pytest.TempPathFactory, receiver: AlertReceiver,
           acme_key_budget: KeyBudget) -> Iterator[DagsterDev]:
    """One `dg dev` for the module, with two organisations (acme: the session emulator, globex: its own);
    after it stops, no process it started (run workers included) is left."""
    dg = shutil.which("dg")
    assert dg, "dg (dagster-dg-cli) is installed with the project"
    root = tmp_path_factory.mktemp("dg_dev")
    alerting, budgets = alerts_env(receiver, acme_key_budget)  # issue23-alerts
    env = {**pipeline_env(emulator, influxd, root),
           **organisations_env({"acme": emulator, "globex": globex}, root, budgets), **alerting}
    server = start_dagster_dev([dg, "dev"], env, root / "dg_dev.log")
    try:
        for name in ALERT_SENSORS:  # issue23-alerts: each alert sensor watches from its first tick, before any run
            wait_for_tick_after(server, name, 0)
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
    assert {"recapture_failed_days", "organisations_from_config"} <= shown["sensors"]
    assert {("influxdb", "generations"), ("duckdb", "daily_usage")} <= set(shown["checks"])
    assert shown["checks"][("influxdb", "generations")] == {
        "zero_duplicates": True, "full_capture_matches_openrouter": True, "cost_matches_openrouter": False}


@dataclass(frozen=True)
class Backfilled:
    """The module's runs: a UI-style backfill of two organisations by two days (globex's first day with a record
    OpenRouter never answers), and beside it the daily_ledger job of acme's day before, whose capture is whole but
    one record of which /generation names another model than /activity counts it under (as a fallback might)."""

    backfill_id: str
    days: list[dt.date]
    servers: dict[str, EmulatorProcess]
    statuses: list[str]  # of the backfill's runs, sorted
    red_check: OrgDay  # the daily_ledger run's organisation-day
    red_check_status: str

    @property
    def red(self) -> tuple[str, str]:
        return "globex", self.days[0].isoformat()


def fallback_model(server: EmulatorProcess, day: dt.date) -> tuple[str, str]:
    """One record of the day and a model of the day other than its own."""
    truth = server.truth(day)
    victim = truth["ids"][0]
    answer = requests.get(f"{server.base_url}/generation", params={"id": victim}, timeout=30,
                          headers={"Authorization": f"Bearer {server.management_key}"})
    answer.raise_for_status()
    return victim, next(model for model in truth["by_model_permaslug"] if model != answer.json()["data"]["model"])


@pytest.fixture(scope="module")
def backfilled(dg_dev: DagsterDev, emulator: EmulatorProcess, globex: EmulatorProcess) -> Backfilled:
    days = [yesterday() - dt.timedelta(days=n) for n in (1, 0)]
    servers = {"acme": emulator, "globex": globex}
    red_check = OrgDay("acme", days[0] - dt.timedelta(days=1))
    wait_for_organisations(dg_dev, list(servers))  # the daemon's sensor read USAGE_ORGANISATIONS
    lost = globex.truth(days[0])["ids"][0]  # globex's first day: one record OpenRouter never answers
    victim, other = fallback_model(emulator, red_check.day)
    globex.set_faults([{"path": "/generation", "id": lost, "status": 404, "count": 1_000_000}])
    emulator.override_records({victim: {"model": other}})
    try:
        backfill = launch_backfill(dg_dev, keys(list(servers), days))
        run_id = launch_daily_ledger(dg_dev, red_check)  # runs while the backfill daemon has not yet launched
        statuses = wait_for_backfill(dg_dev, backfill, runs=4)
        return Backfilled(backfill, days, servers, statuses, red_check, wait_for_run(dg_dev, run_id))
    finally:
        globex.clear_faults()
        emulator.clear_overrides()


def test_a_backfill_of_two_organisations_by_two_days_is_exact_per_organisation_day_and_one_missing_record_is_red(
        dg_dev: DagsterDev, backfilled: Backfilled, tmp_path: Path) -> None:
    days, servers, backfill = backfilled.days, backfilled.servers, backfilled.backfill_id
    assert backfilled.statuses == ["FAILURE"] + ["SUCCESS"] * 3
    runs = backfill_runs(dg_dev, backfill)
    assert sorted(runs) == sorted((org, day.isoformat()) for org in servers for day in days)  # one each
    red = backfilled.red
    for key, run in runs.items():
        if key == red:  # the capture refused to report success with a record missing; nothing was summarized
            assert run.status == "FAILURE" and not any(run.checks.values()), run
            continue
        assert run.status == "SUCCESS" and run.checks == GREEN, run
        assert run.check_days == {run.day} and run.check_orgs == {run.org}
    one_run_per_organisation_at_a_time(runs)

    base = dg_dev.env["INFLUXDB_DATABASE"]
    with duckdb.connect(dg_dev.env["USAGE_DUCKDB_PATH"], read_only=True) as conn:
        totals = {(org, day): requests for org, day, requests in conn.execute(
            "SELECT org, strftime(day, '%Y-%m-%d'), requests FROM daily_totals").fetchall()}
    assert set(totals) == set(runs) - {red}  # the red organisation-day has no summary row
    ids: dict[str, set[str]] = {}
    for org, server in servers.items():
        store = InfluxStore(InfluxSettings(url=dg_dev.env["INFLUXDB_URL"], database=f"{base}_{org}"))
        ids[org] = set()
        for day in days:
            truth, counts = server.truth(day), store.day_counts(day)
            stored = truth["count"] - ((org, day.isoformat()) == red)
            assert counts.points == counts.distinct_ids == stored  # exact; the lost record is not invented
            if (org, day.isoformat()) != red:
                assert totals[(org, day.isoformat())] == truth["count"]
            ids[org] |= store.day_ids(day)
    assert ids["acme"] and ids["globex"] and not ids["acme"] & ids["globex"]  # never mixed
    with InfluxStore(InfluxSettings(url=dg_dev.env["INFLUXDB_URL"], database=base)) as influx:
        databases = {row[0] for series in influx.query("SHOW DATABASES") for row in series.get("values", [])}
    assert {f"{base}_acme", f"{base}_globex"} <= databases and base not in databases  # a database each

    plots = asset_page_plots(dg_dev, ["duckdb", "daily_usage"], ["spend_usd", "requests", "openrouter_requests"])
    (tmp_path / "daily_usage_plots.png").write_bytes(plots.screenshot)
    print(f"screenshot of the asset page: {tmp_path / 'daily_usage_plots.png'}")
    assert not plots.console_errors and not plots.page_errors, (plots.console_errors, plots.page_errors)
    assert not plots.refused_requests, plots.refused_requests  # the UI needs nothing beyond its own server
    data_pixels = plots.evaluated
    assert set(data_pixels) == {"spend_usd", "requests", "openrouter_requests"}, data_pixels  # a plot per number
    assert all(n > 50 for n in data_pixels.values()), data_pixels  # each draws its line over the partitions
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


def test_each_check_is_evaluated_per_organisation_day_and_a_red_one_blocks_that_summary_alone(
        dg_dev: DagsterDev, backfilled: Backfilled) -> None:
    """Through GraphQL, as the UI reads it: the backfill's runs each evaluated the three checks of their own
    organisation-day (the bad one's run failed before they could: Dagster's EXECUTION_FAILED); the daily_ledger
    run of a day whose capture is whole but whose count per model is not has a red full-capture check for that
    partition alone, and its summary was blocked (the capture materialized, the summary did not)."""
    for org in backfilled.servers:
        for day in (d.isoformat() for d in backfilled.days):
            key = f"{day}|{org}"
            for check in CHECKS:
                latest = check_executions(dg_dev, check, key)[0]
                assert latest["partition"] == key, latest
                if (org, day) == backfilled.red:
                    assert latest["status"] == "EXECUTION_FAILED" and latest["evaluation"] is None, latest
                else:
                    evaluation = latest["evaluation"]
                    assert latest["status"] == "SUCCEEDED" and evaluation["success"], latest
                    assert evaluation["partition"] == key and evaluation["description"].startswith(f"{org} {day}:")

    partition, status = backfilled.red_check, backfilled.red_check_status
    key, red = f"{partition.day}|{partition.org}", f"{partition.org} {partition.day}:"
    assert status == "FAILURE"  # a blocking check failed
    latest = {check: check_executions(dg_dev, check, key)[0] for check in CHECKS}
    assert {check: e["status"] for check, e in latest.items()} == {"zero_duplicates": "SUCCEEDED",
        "full_capture_matches_openrouter": "FAILED", "cost_matches_openrouter": "FAILED"}  # cost: a warning
    capture = latest["full_capture_matches_openrouter"]["evaluation"]
    assert capture["partition"] == key and capture["description"].startswith(red), capture
    assert partition_counts(dg_dev, GENERATIONS) == {"materialized": 4, "failed": 1}  # its capture was whole ...
    assert partition_counts(dg_dev, ["duckdb", "daily_usage"]) == {"materialized": 3, "failed": 2}  # ... not summed
    with duckdb.connect(dg_dev.env["USAGE_DUCKDB_PATH"], read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM daily_totals WHERE org = ? AND day = ?",
                            [partition.org, partition.day]).fetchall() == [(0,)]


def test_the_check_grid_and_the_assets_partitions_show_each_organisation_day_red_or_green(
        dg_dev: DagsterDev, backfilled: Backfilled, tmp_path: Path) -> None:
    """The real UI in headless Chromium: the full-capture check's Partitions tab and the Partitions view of
    influxdb/generations, a day focused at a time, each organisation's dot in Dagster's own red or green."""
    (first, second), third = (d.isoformat() for d in backfilled.days), backfilled.red_check.day.isoformat()
    checks, asset, page = partition_grids(dg_dev, "full_capture_matches_openrouter", [first, second, third],
                                          ["acme", "globex"])
    (tmp_path / "check_partitions.png").write_bytes(checks.screenshot)
    (tmp_path / "asset_partitions.png").write_bytes(asset.screenshot)
    print(f"screenshots: {tmp_path / 'check_partitions.png'}, {tmp_path / 'asset_partitions.png'}")
    assert not page.page_errors and not page.refused_requests, (page.page_errors, page.refused_requests)
    # the backfill: globex's first day red, the other three green; acme's third day: a red check
    assert checks.cells == {("globex", first): ["red"], ("acme", first): ["green"], ("acme", second): ["green"],
                            ("globex", second): ["green"], ("acme", third): ["red"], ("globex", third): ["gray"]}
    assert checks.days == {first: ["red"], second: ["green"], third: ["red"]}  # the worst of the day's cells
    # the asset: the failed capture red; the third day's capture was whole (its check is what was red)
    assert asset.cells == {("globex", first): ["red"], ("acme", first): ["green"], ("acme", second): ["green"],
                           ("globex", second): ["green"], ("acme", third): ["green"], ("globex", third): ["gray"]}
    assert asset.days == {first: ["red", "green"], second: ["green"], third: ["gray", "green"]}


# --- issue23-alerts -----------------------------------------------------------------------------------------
def test_operators_hear_once_of_the_red_day_the_budget_crossed_and_the_late_day_and_of_nothing_else(
        dg_dev: DagsterDev, backfilled: Backfilled, receiver: AlertReceiver, acme_key_budget: KeyBudget) -> None:
    """After the backfill above (this module's dg dev): one alert per event, naming organisation, day and figure,
    posted by the daemon's sensors; none for the green organisation-days; the webhook's secret path nowhere."""
    with DagsterInstance.from_config(str(dg_dev.home)) as instance:
        assert instance.get_backfills(), "runs after the backfill of this module, on whose days it alerts"
    days = backfill_days()
    red = ("globex", days[0].isoformat())  # the organisation-day whose record OpenRouter never answered
    red_check = (backfilled.red_check.org, backfilled.red_check.day.isoformat())  # its full-capture check failed
    at = setting("USAGE_CAPTURE_DEADLINE_UTC", dg_dev.env)
    # The late sensor watched from its first tick, after which no deadline passed (12 h away): move its cursor back
    # to just before the deadline of the backfill's first day, as if it had been running since.
    since = deadline_of(days[0], at) - dt.timedelta(minutes=1)
    set_sensor_cursor(dg_dev, "alert_on_late_days", json.dumps({"since": since.timestamp(), "sent": {}}))
    crossed = ("acme", acme_key_budget.crossed_day.isoformat())
    expected = sorted([(HEADLINES["gave_up"], *red), (HEADLINES["budget_crossed"], *crossed), (HEADLINES[LATE], *red),
                       (HEADLINES["check_failed"], *red_check), (HEADLINES["gave_up"], *red_check)])
    receiver.wait_for(lambda posted: set(expected) <= {(p.headline, p.org, p.day) for p in posted}, str(expected))
    seen = time.time()
    ticks = [wait_for_tick_after(dg_dev, name, seen) for name in ALERT_SENSORS]  # a tick more each: nothing new
    posted = receiver.posted()
    assert sorted((p.headline, p.org, p.day) for p in posted) == expected, posted  # once each, and nothing else
    assert not receiver.refused
    by_kind = {(p.headline, p.org, p.day): p for p in posted}
    gave_up = by_kind[(HEADLINES["gave_up"], *red)].figure
    assert gave_up.startswith("1 run(s) failed, every attempt used (USAGE_RECAPTURE_MAX_ATTEMPTS=1); the last: "
                              f"day {days[0]} is incomplete: 1 generation(s) still missing"), gave_up
    spend = acme_key_budget.spend[acme_key_budget.crossed_day]
    assert by_kind[(HEADLINES["budget_crossed"], *crossed)].figure == (
        f"API key {acme_key_budget.key} spent ${spend:,.2f} of its ${acme_key_budget.usd:,.2f} daily budget "
        f"(over by ${spend - acme_key_budget.usd:,.2f})")
    failed = by_kind[(HEADLINES["check_failed"], *red_check)].figure
    assert "full_capture_matches_openrouter" in failed and f"{red_check[0]} {red_check[1]}:" in failed, failed
    late = by_kind[(HEADLINES[LATE], *red)]
    assert late.figure.startswith(f"not captured by {deadline_of(days[0], at):%Y-%m-%d %H:%M} UTC ("), late
    assert all(p.text == f"{p.headline}: {p.org} {p.day}: {p.figure}" for p in posted)
    with duckdb.connect(dg_dev.env["USAGE_DUCKDB_PATH"], read_only=True) as conn:
        over = conn.execute("SELECT org, strftime(day, '%Y-%m-%d'), scope, who FROM daily_budgets "
                            "WHERE over_usd > 0").fetchall()
        budget_rows = conn.execute("SELECT count(*) FROM daily_budgets").fetchall()[0][0]
    assert over == [(*crossed, "api_key", acme_key_budget.key)] and budget_rows == 3 * len(days)  # acme's 3 budgets
    secret = receiver.secret.rsplit("/", 1)[1]
    assert secret not in dg_dev.log_path.read_text(errors="replace")  # never logged
    assert not [tick for tick in ticks if secret in json.dumps(tick)]  # nor in a tick's message or cursor


def test_the_ledger_shows_its_capture_deadline_as_a_freshness_policy_and_alerts_run(dg_dev: DagsterDev) -> None:
    hour, minute = map(int, dg_dev.env["USAGE_CAPTURE_DEADLINE_UTC"].split(":"))
    node = dg_dev.graphql("""{ assetNodes(assetKeys: [{path: ["influxdb", "generations"]}]) {
        internalFreshnessPolicy { __typename ... on CronFreshnessPolicy { deadlineCron lowerBoundDeltaSeconds
                                                                          timezone } } } }""")["assetNodes"][0]
    assert node["internalFreshnessPolicy"] == {
        "__typename": "CronFreshnessPolicy", "deadlineCron": f"{minute} {hour} * * *",
        "lowerBoundDeltaSeconds": (hour * 3600 + minute * 60) or 86400, "timezone": "UTC"}
    assert {name: sensor_state(dg_dev, name)["status"] for name in ALERT_SENSORS} == dict.fromkeys(
        ALERT_SENSORS, "RUNNING")  # running by default: USAGE_ALERT_WEBHOOK_URL is set
# --- end issue23-alerts ---------------------------------------------------------------------------------------
