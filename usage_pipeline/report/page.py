"""The report as one self-contained HTML document: plotly.js inlined once, no request to any server.

Each figure travels as JSON in a `<script type="application/json">` block (with `<`, `>` and `&`
escaped, so no stored label can close the block) and one inline script draws them all, then marks the
body `data-charts="rendered"`, which a browser test can wait for instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import html

import plotly.offline  # type: ignore[import-untyped]  # plotly ships no type hints

from usage_pipeline.report.charts import Chart
from usage_pipeline.report.figures import FLAGGED, ReportData

_STYLE = """
body { font-family: "Liberation Sans", "DejaVu Sans", Arial, sans-serif; margin: 0; background: #f4f5f7;
       color: #1d2330; }
main { max-width: 1200px; margin: 0 auto; padding: 20px 24px 40px; box-sizing: border-box; }
h1 { font-size: 26px; margin: 4px 0; }
h2 { font-size: 19px; margin: 0 0 4px; }
.meta, .note { color: #586074; font-size: 14px; margin: 2px 0 8px; }
section, .totals div { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; }
section { padding: 14px 16px 6px; margin: 14px 0; }
.totals { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 14px 0; }
.totals div { padding: 10px 14px; }
.totals b { display: block; font-size: 24px; margin: 2px 0; }
.totals span { color: #586074; font-size: 13px; }
.empty { padding: 30px; text-align: center; color: #586074; font-size: 16px; }
table { border-collapse: collapse; font-size: 14px; margin: 6px 0 10px; }
td, th { border-bottom: 1px solid #dde1e8; padding: 4px 12px 4px 0; text-align: left; }
.flag { color: #d62728; }
"""

_DRAW = """
(function () {
  var config = {displaylogo: false, responsive: true};
  var drawn = Array.prototype.map.call(document.querySelectorAll("script[data-figure-for]"), function (block) {
    var figure = JSON.parse(block.textContent);
    return Plotly.newPlot(block.getAttribute("data-figure-for"), figure.data, figure.layout, config);
  });
  Promise.all(drawn).then(function () { document.body.setAttribute("data-charts", "rendered"); });
})();
"""


def render_page(data: ReportData, charts: list[Chart], built_at: dt.datetime) -> str:
    """The whole document; a period with nothing stored gets a page that says so, without plotly.js."""
    drawn = [chart for chart in charts if chart.figure is not None]
    head = (f'<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>OpenRouter usage report {html.escape(str(data.period or data.window))}</title>"
            f"<style>{_STYLE}</style>")
    if drawn:
        head += f"<script>{plotly.offline.get_plotlyjs()}</script>"
    body = _header(data, built_at)
    if data.period is None:
        body += (f'<section class="empty"><h2>No data</h2><p>Nothing is stored for {data.window} '
                 f"in {html.escape(str(data.source))}.</p><p>Run the pipeline (or <code>usage-pipeline demo</code>) "
                 f"for these days, or widen <code>--days</code>.</p></section>")
        body += "".join(_section(chart) for chart in charts)  # today's provisional hours, if stored
    else:
        body += _totals(data) + _flagged_days(data) + "".join(_section(chart) for chart in charts)
    script = f"<script>{_DRAW}</script>" if drawn else ""
    state = "pending" if drawn else "none"
    return (f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>'
            f'<body data-charts="{state}"><main>{body}</main>{script}</body></html>\n')


def organisations_shown(data: ReportData) -> str:
    """Whose usage the page shows: one organisation (`--org`), or every one the file holds, summed."""
    if data.org is not None:
        return f"organisation {data.org}"
    if len(data.organisations) == 1:
        return f"organisation {data.organisations[0]}"
    return f"all {len(data.organisations)} organisations, summed: {', '.join(data.organisations)}"


def _header(data: ReportData, built_at: dt.datetime) -> str:
    shown = data.period or data.window
    trimmed = ""
    if data.period is not None and data.period.first > data.window.first:
        trimmed = f" (the file's history begins {data.period.first}; asked for {len(data.window.days)} days)"
    return (f"<h1>OpenRouter usage report</h1>"
            f'<p class="meta" id="organisations">{html.escape(organisations_shown(data))}</p>'
            f'<p class="meta">{html.escape(str(shown))}: {len(shown.days)} UTC days{trimmed} · '
            f"from {html.escape(str(data.source))} · built {built_at:%Y-%m-%d %H:%M} UTC</p>")


def _totals(data: ReportData) -> str:
    t = data.totals
    days = len(data.period.days) if data.period else 0
    cards = [
        (f"{t.requests:,}", "requests (captured + aggregate days)"),
        (f"${t.spend_usd:,.2f}", "spend, OpenRouter's usage (USD)"),
        (f"{_short(t.tokens_prompt)} / {_short(t.tokens_completion)}", "tokens, prompt / completion"),
        (f"{t.days_exact} / {t.days_aggregate} / {t.days_missing}",
         f"days exact / aggregate / missing of {days}"
         + (f'; <span class="flag">{t.days_flagged} flagged</span>' if t.days_flagged else "")),
    ]
    return '<div class="totals">' + "".join(f"<div><b>{v}</b><span>{k}</span></div>" for v, k in cards) + "</div>"


def _short(count: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:,.1f}{suffix}"
    return f"{count:,}"


def _flagged_days(data: ReportData) -> str:
    """The capture proof's exceptions, spelled out: captured days that are not exact."""
    flagged = data.day_status[data.day_status["kind"] == FLAGGED]
    if flagged.empty:
        return ""
    rows = "".join(f"<tr><td>{day}</td><td>{int(requests):,}</td><td class=flag>{html.escape(note)}</td></tr>"
                   for day, requests, note in zip(flagged["day"], flagged["requests"], flagged["note"], strict=True))
    return (f'<section><h2 class="flag">Flagged days ({len(flagged)})</h2>'
            f'<p class="note">Captured days whose capture_status is not complete or whose count differs '
            f"from OpenRouter's.</p><table><tr><th>day</th><th>captured</th><th>why</th></tr>{rows}</table></section>")


def _section(chart: Chart) -> str:
    heading = (f'<h2>{html.escape(chart.title)}</h2><p class="note">{_code(chart.note)}</p>')
    if chart.figure is None:
        return f'<section id="{chart.element_id}-section">{heading}<p class="empty">{html.escape(chart.empty)}</p>' \
               f"</section>"
    figure = chart.figure.to_json().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<section id="{chart.element_id}-section">{heading}<div id="{chart.element_id}" class="chart"></div>'
            f'<script type="application/json" data-figure-for="{chart.element_id}">{figure}</script></section>')


def _code(note: str) -> str:
    """A note's `column` names set as code."""
    parts = html.escape(note).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))
