"""The usage report in a real headless Chromium (Debian's, never downloaded): it draws every chart with
data for every stored day, logs no error, asks the network for nothing, and is not blank. A report built
from a file missing a day's rows is caught by the same check. Today's provisional hours are drawn like the
day charts: models by label in the same colours, white, no legend over an axis, no extra gap."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from openrouter_emulator.dataset import MODELS
from usage_pipeline.duck import store_path_for
from usage_pipeline.report import write_report
from usage_pipeline.report.figures import OTHER
from usage_pipeline_tests import browser
from usage_pipeline_tests.browser import PageVisit, open_page, pixel_statistics
from usage_pipeline_tests.usage_history import write_today, write_usage_file

UNTIL = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
EXACT_DAYS = [UNTIL - dt.timedelta(days=n) for n in range(4, -1, -1)]
AGGREGATE_DAYS = [UNTIL - dt.timedelta(days=n) for n in range(8, 5, -1)]  # UNTIL - 5 is missing
RENDERED = "document.body.dataset.charts !== 'pending'"

# Every plotly chart as drawn: its traces' points and colours, and where it and its plot area sit on the page
# (x, y, width, height, for pixel checks).
CHARTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const place = element => {
    const box = element.getBoundingClientRect();
    return [box.left + window.scrollX, box.top + window.scrollY, box.width, box.height];
  };
  return {id: gd.id, box: place(gd), plot: place(gd.querySelector('.nsewdrag')),
          traces: gd.data.map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || []),
                                     colour: (t.marker || {}).color}))};
})"""


# Where each chart's parts sit on the page (x0, y0, x1, y1), its legend's entries and its traces' colours.
LAYOUT = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const box = element => {
    if (!element) return null;
    const b = element.getBoundingClientRect();
    return [b.left + window.scrollX, b.top + window.scrollY, b.right + window.scrollX, b.bottom + window.scrollY];
  };
  return {id: gd.id, chart: box(gd), plot: box(gd.querySelector('.nsewdrag')), legend: box(gd.querySelector('.legend')),
          note: box(gd.closest('section').querySelector('.note')), x_title: box(gd.querySelector('.g-xtitle text')),
          x_ticks: Array.from(gd.querySelectorAll('.xtick text')).map(t => ({text: t.textContent, box: box(t)})),
          legend_entries: Array.from(gd.querySelectorAll('.legendtext')).map(t => t.textContent),
          colours: gd._fullData.map(t => t.marker.color)};
})"""
DATE = re.compile(r"[A-Z][a-z]{2} \d{1,2}")  # plotly's date line under an hour tick, e.g. "Dec 7, 2026"


def expected_days() -> dict[str, set[str]]:
    """The days each day-chart must draw: every stored day, or only captured ones for keys and users."""
    stored = {d.isoformat() for d in EXACT_DAYS + AGGREGATE_DAYS}
    exact = {d.isoformat() for d in EXACT_DAYS}
    return {"spend-by-model": stored, "requests-vs-openrouter": stored, "spend-by-api-key": exact,
            "spend-by-user": exact}


def days_without_data(charts: list[dict[str, Any]], expected: dict[str, set[str]]) -> dict[str, list[str]]:
    """Per chart, the expected days that no trace draws a positive value for (a chart that is absent
    lacks all its days); the latency chart must have a positive bar in every trace."""
    drawn = {chart["id"]: chart["traces"] for chart in charts}
    lacking: dict[str, list[str]] = {}
    for chart_id, days in expected.items():
        shown = {str(x)[:10] for trace in drawn.get(chart_id, [])
                 for x, y in zip(trace["x"], trace["y"], strict=True) if y is not None and y > 0}
        if days - shown:
            lacking[chart_id] = sorted(days - shown)
    latency = drawn.get("latency-by-provider", [])
    if not latency or not all(trace["y"] and all(y > 0 for y in trace["y"]) for trace in latency):
        lacking["latency-by-provider"] = ["no positive latency bars"]
    return lacking


def blank_charts(visited: PageVisit) -> list[str]:
    """The charts whose part of the screenshot looks empty: an axes-only chart shows ~250 colours (text
    anti-aliasing) with 90% of it background; drawn ones show 500+ with at most ~77%."""
    charts = visited.evaluated
    boxes = [(round(c["box"][0]), round(c["box"][1]), round(c["box"][2]), round(c["box"][3])) for c in charts]
    return [chart["id"] for chart, pixels in zip(charts, pixel_statistics(visited.screenshot, boxes), strict=True)
            if pixels.distinct_colours < 400 or pixels.background_share > 0.85]


def overlaps(a: list[float] | None, b: list[float] | None) -> bool:
    return a is not None and b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(inner: list[float], outer: list[float]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def todays_faults(visited: PageVisit) -> dict[str, object]:
    """How the "Today so far" chart differs from the day charts: each fault names what a reader would see."""
    charts = {chart["id"]: chart for chart in visited.evaluated}
    today, others = charts["usage-today"], [c for name, c in charts.items() if name != "usage-today"]
    faults: dict[str, object] = {}
    if overlaps(today["legend"], today["x_title"]):
        faults["legend over the x-axis title"] = (today["legend"], today["x_title"])
    dated = [tick for tick in today["x_ticks"] if DATE.search(tick["text"])]
    hidden = [tick["text"] for tick in today["x_ticks"]
              if not inside(tick["box"], today["chart"]) or overlaps(tick["box"], today["legend"])]
    if not dated or hidden:
        faults["x ticks clipped or under the legend (a date tick must show)"] = hidden or today["x_ticks"]
    # The plot area's own colour, as drawn: its top 4 px rows, above the tallest bar (plotly leaves headroom).
    day_charts = [c for c in others if c["id"] != "latency-by-provider"] + [today]
    strips = [(round(c["plot"][0]), round(c["plot"][1]), round(c["plot"][2] - c["plot"][0]), 4) for c in day_charts]
    backgrounds = {c["id"]: pixels.background
                   for c, pixels in zip(day_charts, pixel_statistics(visited.screenshot, strips), strict=True)}
    if len(set(backgrounds.values())) > 1:
        faults["plot background unlike the day charts'"] = backgrounds
    gaps = {c["id"]: c["plot"][1] - c["note"][3] for c in [*others, today]}
    if gaps["usage-today"] > max(gaps[c["id"]] for c in others):
        faults["gap above the plot larger than the other charts'"] = gaps
    shared = [pair for pair in itertools.combinations(zip(today["legend_entries"], today["colours"], strict=True), 2)
              if pair[0][1] == pair[1][1]]
    if shared:
        faults["models sharing a colour"] = shared
    spend = dict(zip(charts["spend-by-model"]["legend_entries"], charts["spend-by-model"]["colours"], strict=True))
    recoloured = {name: (spend[name], colour) for name, colour in zip(today["legend_entries"], today["colours"],
                                                                      strict=True) if spend.get(name, colour) != colour}
    if recoloured:
        faults["models coloured unlike the spend chart"] = recoloured
    unnamed = set(today["legend_entries"]) - {m.name for m in MODELS} - {OTHER}
    if unnamed or not today["legend_entries"]:
        faults["legend entries that are not model labels"] = sorted(unnamed)
    return faults


def hex_colour(colour: str) -> str:
    """A plotly colour ("rgb(136, 204, 238)" or "#b8b8b8") as the pixels' "#rrggbb"."""
    rgb = re.fullmatch(r"rgb\((\d+), ?(\d+), ?(\d+)\)", colour)
    return "#" + "".join(f"{int(v):02x}" for v in rgb.groups()) if rgb else colour.lower()


def drawn_colours(visited: PageVisit, chart_id: str) -> list[str]:
    """The chart's trace colours that fill 50 pixels or more of its plot area in the screenshot: bars really
    drawn (legend swatches lie outside the plot area). For a chart with little to draw, e.g. a lone hour,
    where blank_charts' colour counts say nothing."""
    chart = next(c for c in visited.evaluated if c["id"] == chart_id)
    (pixels,) = pixel_statistics(visited.screenshot, [tuple(round(v) for v in chart["plot"])])
    colours = [hex_colour(t["colour"]) for t in chart["traces"] if isinstance(t["colour"], str)]
    return [colour for colour in dict.fromkeys(colours) if colour in pixels.solid]


def visit(report: Path) -> PageVisit:
    return open_page(report.resolve().as_uri(), ready=RENDERED, evaluate=CHARTS)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report_browser") / "usage.duckdb"
    write_usage_file(path, exact_days=EXACT_DAYS, aggregate_days=AGGREGATE_DAYS, generations_per_day=1000)
    return path


@pytest.fixture(scope="module")
def with_today(history: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same days and today's hours so far (at least 8 of them, whenever the suite runs, so that every
    model has traffic) through the `usage_today` job's write path."""
    path = tmp_path_factory.mktemp("report_today") / "usage.duckdb"
    shutil.copy(history, path)
    shutil.copy(store_path_for(history), store_path_for(path))
    now = dt.datetime.now(dt.UTC)
    write_today(path, generations_per_day=2000, now=max(now, now.replace(hour=8, minute=0, second=0)))
    return path


def test_the_report_draws_every_chart_offline_with_data_for_every_day(history: Path, tmp_path: Path) -> None:
    report = write_report(tmp_path / "usage_report.html", duckdb_path=history, days=30, until=UNTIL)
    page = visit(report.path)
    assert page.console_errors == [] and page.page_errors == []
    assert page.refused_requests == [], "the report must need no network"
    assert set(page.requests) == {report.path.resolve().as_uri()}
    charts = page.evaluated
    assert [c["id"] for c in charts] == ["spend-by-model", "requests-vs-openrouter", "spend-by-api-key",
                                         "spend-by-user", "latency-by-provider"]
    assert days_without_data(charts, expected_days()) == {}
    # Not blank: the page holds thousands of colours (1,000 with every chart empty), each chart hundreds.
    assert page.pixels.width == 1200 and page.pixels.distinct_colours > 2500, page.pixels
    assert blank_charts(page) == []


def test_todays_hours_are_drawn_like_the_day_charts(with_today: Path, tmp_path: Path) -> None:
    report = write_report(tmp_path / "usage_report.html", duckdb_path=with_today, days=30, until=UNTIL)
    page = open_page(report.path.resolve().as_uri(), ready=RENDERED, evaluate=LAYOUT)
    assert page.console_errors == [] and page.page_errors == [] and page.refused_requests == []
    assert [c["id"] for c in page.evaluated][-1] == "usage-today"
    assert todays_faults(page) == {}


def test_the_check_rejects_a_report_missing_a_days_rows(history: Path, tmp_path: Path) -> None:
    broken = tmp_path / "usage.duckdb"
    shutil.copy(history, broken)
    lost = EXACT_DAYS[2]
    with duckdb.connect(str(broken)) as conn:  # the day's model rows are gone; its other tables remain
        conn.execute("DELETE FROM daily_usage WHERE day = ?", [lost])
    report = write_report(tmp_path / "usage_report.html", duckdb_path=broken, days=30, until=UNTIL)
    page = visit(report.path)
    assert page.console_errors == [] and page.page_errors == []
    assert days_without_data(page.evaluated, expected_days()) == {"spend-by-model": [lost.isoformat()]}


def test_the_pixel_check_rejects_charts_drawn_without_points(history: Path, tmp_path: Path) -> None:
    report = write_report(tmp_path / "usage_report.html", duckdb_path=history, days=30, until=UNTIL).path
    page = report.read_text()
    for element_id in ("spend-by-model", "latency-by-provider"):  # the same figures, every trace emptied
        start = page.index(f'data-figure-for="{element_id}">') + len(f'data-figure-for="{element_id}">')
        end = page.index("</script>", start)
        figure = json.loads(page[start:end])
        figure["data"] = [{**trace, "x": [], "y": []} for trace in figure["data"]]
        page = page[:start] + json.dumps(figure).replace("<", "\\u003c") + page[end:]
    report.write_text(page)
    emptied = visit(report)
    assert emptied.page_errors == [] and blank_charts(emptied) == ["spend-by-model", "latency-by-provider"]


def test_a_report_with_no_data_says_so_in_the_browser(history: Path, tmp_path: Path) -> None:
    report = write_report(tmp_path / "empty.html", duckdb_path=history, days=7, until=dt.date(2020, 1, 7))
    page = open_page(report.path.resolve().as_uri(), ready=RENDERED,
                     evaluate="() => document.querySelector('main').innerText")
    assert page.console_errors == [] and page.page_errors == [] and page.refused_requests == []
    assert "No data" in page.evaluated and "Nothing is stored for 2020-01-01 – 2020-01-07" in page.evaluated
    assert days_without_data([], expected_days()).keys() == {*expected_days(), "latency-by-provider"}


def test_the_browser_helper_refuses_and_reports_network_requests(tmp_path: Path) -> None:
    page_file = tmp_path / "leaky.html"
    page_file.write_text('<!DOCTYPE html><html><body><p>hi</p><img src="http://198.51.100.7/pixel.png">'
                         '<script src="https://cdn.example.invalid/lib.js"></script></body></html>')
    page = open_page(page_file.resolve().as_uri())
    assert sorted(page.refused_requests) == ["http://198.51.100.7/pixel.png", "https://cdn.example.invalid/lib.js"]


def test_a_missing_chromium_fails_with_the_command_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(browser.BrowserMissing, match=r"run `apt-get install -y chromium`"):
        open_page("file:///dev/null")
