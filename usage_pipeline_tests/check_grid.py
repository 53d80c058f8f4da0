"""What a real Dagster server shows of the ledger's checks per organisation-day: each check's executions by
partition (GraphQL, as the UI reads them), a run launched as the UI or the schedule launches one, and the status
dots of a check's and of the asset's Partitions views, read from the page's DOM in headless Chromium.

The UI draws a partition's status as a 10 px dot beside its key (`PartitionListSelector`), coloured with the
theme's accent colours; clicking a day focuses it, and each organisation's dot then shows that one
organisation-day. The dots are named here by comparing each computed colour with the theme's own accent colours,
so a test reads "red" only where Dagster painted its red.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagster import DagsterInstance

from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline_tests.browser import PageVisit, open_page
from usage_pipeline_tests.dagster_dev import DagsterDev

if TYPE_CHECKING:
    from playwright.sync_api import Page

GENERATIONS = ["influxdb", "generations"]
CHECKS = ("zero_duplicates", "full_capture_matches_openrouter", "cost_matches_openrouter")


def check_executions(server: DagsterDev, check: str, partition: str) -> list[dict[str, Any]]:
    """The check's executions of one organisation-day, newest first: status (SUCCEEDED, FAILED, EXECUTION_FAILED,
    ...), the run, and the evaluation with the partition it names (None where the check never evaluated)."""
    return list(server.graphql("""
        query($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
          assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 10) {
            runId status partition evaluation { success partition description } } }""",
        {"assetKey": {"path": GENERATIONS}, "checkName": check, "partition": partition})["assetCheckExecutions"])


def partition_counts(server: DagsterDev, asset: list[str]) -> dict[str, int]:
    """How many of the asset's partitions the UI counts materialized and failed."""
    node = server.graphql("""query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
        partitionStats { numMaterialized numFailed } } } }""", {"key": {"path": asset}})["assetNodeOrError"]
    return {"materialized": node["partitionStats"]["numMaterialized"], "failed": node["partitionStats"]["numFailed"]}


def launch_daily_ledger(server: DagsterDev, partition: OrgDay) -> str:
    """The daily_ledger job for one organisation-day, launched as its schedule launches it (the partition's tags)."""
    node = server.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
                          )["repositoriesOrError"]["nodes"][0]
    launched = server.graphql("""mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {"params": {"selector": {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"],
                                 "jobName": "daily_ledger"},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in partition.tags.items()]}}}
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])


def wait_for_run(server: DagsterDev, run_id: str, timeout_s: float = 240) -> str:
    """Until the run has ended; its status."""
    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(server.home)) as instance:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                return run.status.value
            time.sleep(0.5)
    raise AssertionError(f"run {run_id} had not ended after {timeout_s} s: {server.log_path}")


DOTS = """(keys) => {
  // Each listed key's status dots, named by the theme's accent colour they are painted with.
  const probe = (name) => {
    const box = document.createElement('div');
    box.style.background = `var(--color-accent-${name})`;
    document.body.appendChild(box);
    const colour = getComputedStyle(box).backgroundColor;
    box.remove();
    return colour;
  };
  const palette = Object.fromEntries(['red', 'green', 'gray', 'yellow', 'blue'].map(n => [n, probe(n)]));
  const named = (colour) => Object.keys(palette).find(n => palette[n] === colour) || colour;
  const found = {};
  for (const label of document.querySelectorAll('[data-tooltip]')) {
    const key = label.getAttribute('data-tooltip');
    if (!keys.includes(key) || !label.parentElement) continue;
    found[key] = [...label.parentElement.children].filter(e => e !== label)
      .map(dot => named(getComputedStyle(dot).backgroundColor));
  }
  return found;
}"""


@dataclass
class Grid:
    """What one Partitions view showed: the days' dots unfocused, then each organisation's dot with a day focused."""

    days: dict[str, list[str]] = field(default_factory=dict)
    cells: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (org, day) -> that cell's dots
    screenshot: bytes = b""


FOCUSED = """(day) => [...document.querySelectorAll('[class*="assetListRowFocused"] [data-tooltip]')]
  .some(e => e.getAttribute('data-tooltip') === day)"""  # the row Dagster marks focused is that day's


def _read_grid(page: Page, days: Sequence[str], orgs: Sequence[str]) -> Grid:
    """Read the open Partitions view: the days' dots, then each day focused in turn and its organisations' dots."""
    page.locator(f'[data-tooltip="{days[0]}"]').first.wait_for(timeout=60_000)
    grid = Grid(days=page.evaluate(f"({DOTS})", list(days)))
    for day in [*days[1:], days[0]]:  # the first day last: the screenshot shows it focused
        page.locator(f'[data-tooltip="{day}"]').first.click()
        page.wait_for_function(FOCUSED, arg=day, timeout=30_000)
        for org, dots in page.evaluate(f"({DOTS})", list(orgs)).items():
            grid.cells[(org, day)] = dots
    grid.screenshot = page.screenshot(full_page=True)
    return grid


def partition_grids(server: DagsterDev, check: str, days: Sequence[str],
                    orgs: Sequence[str]) -> tuple[Grid, Grid, PageVisit]:
    """The check's Partitions tab and the Partitions view of `influxdb/generations`, in one headless Chromium."""
    seen: list[Grid] = []
    asset_url = f"{server.url}/assets/{'/'.join(GENERATIONS)}"

    def visit(page: Page) -> None:
        check_tabs = page.get_by_role("tablist").filter(has=page.get_by_role("tab", name="Execution history"))
        check_tabs.get_by_role("tab", name="Partitions").click(timeout=60_000)  # the check's (not the asset's) tab
        seen.append(_read_grid(page, days, orgs))
        page.goto(f"{asset_url}?view=partitions", wait_until="load")
        seen.append(_read_grid(page, days, orgs))

    server.graphql("mutation { setNuxSeen }")  # no one-time "join the community" dialog over the page
    page = open_page(f"{asset_url}?view=checks&checkDetail={check}", allow_local_http=True, interact=visit,
                     width=1400, height=1100, timeout_s=120)
    return seen[0], seen[1], page
