"""The report's charts: ReportData frames turned into plotly figures, each with its heading and note.

Labels (model names, API key labels, external users) are data, not markup: plotly renders a subset of
HTML in any text it draws, so they are escaped before they reach a figure.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from dataclasses import dataclass

import pandas
import plotly.graph_objects as go  # type: ignore[import-untyped]  # plotly ships no type hints
from plotly.colors import qualitative  # type: ignore[import-untyped]

from usage_pipeline.report.figures import AGGREGATE, EXACT, FLAGGED, OTHER, ReportData
from usage_pipeline.report.period import Period

# Colour-blind safe (Paul Tol's, as plotly ships them), grey left out: grey is OTHER's. Safe's ten, then six of
# Tol's vibrant and light schemes, so the spend chart's top models and the hours' own top models (at most
# TOP_MODELS each) never share a colour.
PALETTE = [*(c for c in qualitative.Safe if c != "rgb(136, 136, 136)"),
           "#EE7733", "#0077BB", "#EE3377", "#BBCC33", "#FFAABB", "#CC3311"]
OTHER_COLOUR = "#b8b8b8"
AGGREGATE_LABEL = "aggregate (OpenRouter's analytics, not captured)"
_HALF_DAY = dt.timedelta(hours=12)
_HALF_HOUR = pandas.Timedelta(minutes=30)
_HOUR_BAR_MS = 0.8 * 3_600_000  # an hour's bar, with the day charts' 20% gap between bars
DENSE_DAYS = 62  # beyond this a day's bar is a few pixels wide: no hatching, outlines or big markers


def dense(period: Period) -> bool:
    return len(period.days) > DENSE_DAYS


@dataclass(frozen=True)
class Chart:
    """One section of the page: `figure` is None when the period has nothing to draw, `empty` says why."""

    element_id: str
    title: str
    note: str
    figure: go.Figure | None
    empty: str = ""


def build_charts(data: ReportData) -> list[Chart]:
    """The charts in page order (five, and today's hours when `usage_today` has rows); an empty list when
    nothing is stored in the period."""
    # One colour per model on the whole page: the spend chart's ranks first, then the hours' other models.
    colours = _colours([*data.spend_by_model["model"], *data.today["model"]])
    if data.period is None:  # no captured day in the window: today's provisional hours alone, if any
        return [_today(data, colours)] if not data.today.empty else []
    aggregate = int((data.day_status["kind"] == AGGREGATE).sum())
    exact_note = (" Captured days only, from the first one: aggregate days have no per-key or per-user figures."
                  if aggregate else "")
    return [
        _spend_by_model(data, data.period, colours),
        _requests(data, data.period),
        _spend_by(data.spend_by_api_key, "api_key", data, "spend-by-api-key",
                  "Spend per day by API key (USD)",
                  f"The top API keys by spend over the period (legend: period total); `total_cost`.{exact_note}"),
        _spend_by(data.spend_by_user, "external_user", data, "spend-by-user",
                  "Spend per day by external user (USD)",
                  f"The top external users (the `user` field of requests) by spend over the period; "
                  f"`total_cost`.{exact_note}"),
        _latency(data, colours),
        *([_today(data, colours)] if not data.today.empty else []),
    ]


def _today(data: ReportData, colours: dict[str, str]) -> Chart:
    """The provisional hours beside the captured days: spend per hour by model, from `usage_today`, drawn
    like the day charts (models by name, the same colours, white, legend on the right)."""
    frame = data.today
    as_of = pandas.Timestamp(frame["built_at"].max()).strftime("%Y-%m-%d %H:%M")
    named = len(set(frame["model"]) - {OTHER})
    note = (f"PROVISIONAL, as of {as_of} UTC: `usage_today`, what Broadcast push has stored of the days not yet "
            f"captured; the top {named} models by spend, the rest as “{OTHER}”. Push is not complete "
            f"(sampling, drops); each day's nightly exact capture replaces it.")
    figure = go.Figure()
    for model, rows in frame.groupby("model", sort=False):
        figure.add_bar(name=label(model), x=[pandas.Timestamp(h).isoformat() for h in rows["hour"]],
                       y=rows["usage"].round(6).tolist(), marker={"color": colours.get(str(model), OTHER_COLOUR)},
                       width=_HOUR_BAR_MS,  # plotly cannot infer a bar's width from a lone hour
                       hovertemplate="%{x|%Y-%m-%d %H:00} · %{fullData.name}: $%{y:,.4f}<extra></extra>")
    # The whole of each open day, so the hours so far fill it from the left and a lone hour is one hour wide.
    days = pandas.to_datetime(frame["hour"]).dt.normalize()
    first, last = days.min() - _HALF_HOUR, days.max() + pandas.Timedelta(days=1) - _HALF_HOUR
    _layout(figure)
    figure.update_layout(barmode="stack", yaxis={"title": "spend (USD)", "tickprefix": "$", "rangemode": "tozero"},
                         xaxis={"type": "date", "title": "hour (UTC)",
                                "range": [first.isoformat(sep=" "), last.isoformat(sep=" ")]})
    return Chart("usage-today", "Today so far, per hour by model (provisional, USD)", note, figure)


def label(text: object) -> str:
    """A stored value as plotly text: shown literally, never as markup."""
    return html.escape(str(text), quote=False)


def _colours(models: Iterable[str]) -> dict[str, str]:
    """One colour per model in rank order, so a model looks the same in every chart."""
    named = [str(m) for m in dict.fromkeys(models) if m != OTHER]
    return {**{m: PALETTE[i % len(PALETTE)] for i, m in enumerate(named)}, OTHER: OTHER_COLOUR}


def _layout(figure: go.Figure) -> None:
    """What every time chart shares: white, the same height and margins, the legend on the right."""
    figure.update_layout(template="plotly_white", height=380, margin={"l": 70, "r": 20, "t": 20, "b": 50},
                         legend={"traceorder": "normal"}, hoverlabel={"namelength": -1})


def _iso(days: Iterable[dt.date]) -> list[str]:
    return [day.isoformat() for day in days]


def _day_axis(figure: go.Figure, period: Period, missing: list[dt.date], y_title: str, prefix: str = "") -> None:
    """Dates on x (one tick a day for short periods), units on y, and grey bands over missing days."""
    days = len(period.days)
    _layout(figure)
    figure.update_layout(
        barmode="relative",
        xaxis={"type": "date", "title": "day (UTC)", "range": [_edge(period.first, -1), _edge(period.last, 1)],
               "dtick": 86_400_000 if days <= 16 else None, "tickformat": "%b %d" if days <= 16 else None},
        yaxis={"title": y_title, "tickprefix": prefix, "rangemode": "tozero"})
    if dense(period):  # a white outline would hide a bar two pixels wide
        figure.update_traces(marker_line_width=0, selector={"type": "bar"})
        figure.update_layout(bargap=0)
    for first, last in _runs(missing):
        figure.add_vrect(x0=_edge(first, -1), x1=_edge(last, 1), fillcolor="#dddddd", opacity=0.5,
                         line_width=0, layer="below")


def _edge(day: dt.date, side: int) -> str:
    """The instant half a day before (side -1) or after (side 1) a day's bar centre."""
    return (dt.datetime.combine(day, dt.time()) + side * _HALF_DAY).isoformat(sep=" ")


def _runs(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days merged into (first, last) runs, so a long gap is one band."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][1] == dt.timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _missing(data: ReportData, period: Period) -> list[dt.date]:
    stored = set(data.day_status["day"])
    return [day for day in period.days if day not in stored]


def _spend_by_model(data: ReportData, period: Period, colours: dict[str, str]) -> Chart:
    frame = data.spend_by_model
    title, element_id = "Spend per day by model (USD)", "spend-by-model"
    named = len(set(frame["model"]) - {OTHER})
    note = (f"OpenRouter's `usage` (USD) of the top {named} models by spend over the period; "
            f"the rest as “{OTHER}”. Hatched bars (pale over more than {DENSE_DAYS} days): {AGGREGATE_LABEL}. "
            f"Grey bands: days missing from the file.")
    if frame.empty:
        return Chart(element_id, title, note, None, "No model spend stored for these days.")
    figure, thin = go.Figure(), dense(period)
    for model, rows in frame.groupby("model", sort=False):
        figure.add_bar(
            name=label(model), x=_iso(rows["day"]), y=rows["usage"].round(6).tolist(),
            marker={"color": colours.get(str(model), OTHER_COLOUR),
                    "pattern": {"shape": ["/" if kind == AGGREGATE and not thin else "" for kind in rows["kind"]]},
                    "opacity": [0.55 if kind == AGGREGATE and thin else 1.0 for kind in rows["kind"]]},
            hovertemplate="%{x|%Y-%m-%d} · %{fullData.name}: $%{y:,.2f}<extra></extra>")
    _day_axis(figure, period, _missing(data, period), "spend (USD)", "$")
    return Chart(element_id, title, note, figure)


def _requests(data: ReportData, period: Period) -> Chart:
    status = data.day_status
    title, element_id = "Requests per day: captured vs OpenRouter's own count", "requests-vs-openrouter"
    note = ("Bars: generations captured into the ledger (`daily_totals.requests`); diamonds: OpenRouter's own count "
            "for the day (`api_requests`). Red bars: days not 'complete' or whose counts differ. "
            "Grey bands: days missing from the file.")
    figure = go.Figure()
    kinds = ((EXACT, "captured, equals OpenRouter's count", "#1f6fb2", ""),
             (FLAGGED, "captured, FLAGGED: not complete or ≠ OpenRouter", "#d62728", ""),
             (AGGREGATE, AGGREGATE_LABEL, "#c7c7c7", "/"))
    for kind, name, colour, pattern in kinds:
        rows = status[status["kind"] == kind]
        if rows.empty:
            continue
        figure.add_bar(name=name, x=_iso(rows["day"]), y=rows["requests"].tolist(), customdata=rows["note"].tolist(),
                       marker={"color": colour, "pattern": {"shape": "" if dense(period) else pattern}},
                       hovertemplate="%{x|%Y-%m-%d}: %{y:,} requests %{customdata}<extra></extra>")
    counted = status[status["api_requests"].notna()]
    if not counted.empty:
        figure.add_scatter(name="OpenRouter's count (analytics)", x=_iso(counted["day"]),
                           y=counted["api_requests"].astype("int64").tolist(), mode="markers",
                           marker={"symbol": "diamond", "size": 4 if dense(period) else 9, "color": "#222222"},
                           hovertemplate="%{x|%Y-%m-%d}: OpenRouter counted %{y:,}<extra></extra>")
    _day_axis(figure, period, _missing(data, period), "requests")
    return Chart(element_id, title, note, figure)


def _spend_by(frame: pandas.DataFrame, column: str, data: ReportData, element_id: str, title: str,
              note: str) -> Chart:
    captured = data.day_status.loc[data.day_status["kind"] != AGGREGATE, "day"]
    if frame.empty or captured.empty or data.period is None:
        return Chart(element_id, title, note, None, "No captured days in this period: nothing to break down.")
    period = Period(min(captured), data.period.last)  # drawn from the first captured day: none before it
    totals = frame.groupby(column, sort=False)["total_cost"].sum()
    figure = go.Figure()
    for index, (name, rows) in enumerate(frame.groupby(column, sort=False)):
        colour = OTHER_COLOUR if name == OTHER else PALETTE[index % len(PALETTE)]
        figure.add_bar(name=f"{label(name)} · ${totals[name]:,.2f}", x=_iso(rows["day"]),
                       y=rows["total_cost"].round(6).tolist(), customdata=rows["requests"].tolist(),
                       marker={"color": colour},
                       hovertemplate="%{x|%Y-%m-%d} · %{fullData.name}<br>$%{y:,.2f} "
                                     "in %{customdata:,} requests<extra></extra>")
    _day_axis(figure, period, _missing(data, period), "spend (USD)", "$")
    return Chart(element_id, title, note, figure)


def _latency(data: ReportData, colours: dict[str, str]) -> Chart:
    frame = data.provider_latency.dropna(subset=["avg_latency_ms"])
    title, element_id = "Average latency by provider, top models (ms)", "latency-by-provider"
    note = ("Each provider's average latency (`avg_latency_ms`, ms) for the models of most spend, weighted by "
            "requests over the period's captured days; the bar's label is its request count.")
    if frame.empty:
        return Chart(element_id, title, note, None, "No latency recorded on captured days in this period.")
    # One trace in the frame's order (by model rank, then requests): plotly keeps a trace's category order.
    models = [str(m) for m in frame["model"]]
    rank = {m: i for i, m in enumerate(dict.fromkeys(models))}
    figure = go.Figure(go.Bar(
        name="average latency",
        x=[[label(m).replace(": ", ":<br>", 1) for m in models], [label(p) for p in frame["provider"]]],
        y=frame["avg_latency_ms"].round(1).tolist(), text=[f"{int(r):,} req" for r in frame["requests"]],
        textposition="inside", insidetextanchor="end", customdata=frame["requests"].tolist(),
        marker={"color": [colours.get(m, PALETTE[rank[m] % len(PALETTE)]) for m in models]},
        hovertemplate="%{x}<br>%{y:,.0f} ms over %{customdata:,} requests<extra></extra>"))
    figure.update_layout(template="plotly_white", height=400, showlegend=False, bargap=0.25,
                         margin={"l": 70, "r": 70, "t": 20, "b": 70},
                         yaxis={"title": "average latency (ms)", "ticksuffix": " ms", "rangemode": "tozero"},
                         xaxis={"title": None, "tickangle": 0})
    return Chart(element_id, title, note, figure)
