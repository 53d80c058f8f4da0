"""The report's figures: the published DuckDB file read into pandas frames, with no plotting here.

Captured days come from the pipeline's own summaries (`daily_usage*`, one `daily_totals` row each);
days older than the ledger may be stored as OpenRouter's analytics aggregates (`history_by_model`,
`daily_totals.capture_status` 'aggregate'). Those tables and `model_names` may be absent from a file,
so every query checks first and an absent table reads as no rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas

from usage_pipeline.report.period import Period, period_to_show
from usage_pipeline.report.scope import MIXED, OrganisationNotStored, organisations_stored, scope_to

TOP_MODELS = 8  # models drawn by name in the spend chart; the rest are summed as OTHER
TOP_SPENDERS = 8  # API keys and external users drawn by name
LATENCY_MODELS = 5  # models whose providers' latency is compared
OTHER = "other"

# Kinds of a stored day, in `day_status.kind`.
EXACT = "exact"  # captured, capture_status 'complete', and the count equals OpenRouter's
FLAGGED = "flagged"  # captured, but not 'complete' or its count differs from OpenRouter's
AGGREGATE = "aggregate"  # OpenRouter's analytics aggregates only, not captured generation by generation

_MODEL_NAMES = """
    SELECT key, any_value(name) AS name FROM (
        SELECT slug AS key, name FROM model_names UNION ALL SELECT permaslug, name FROM model_names)
    WHERE key IS NOT NULL AND name IS NOT NULL GROUP BY key"""


@dataclass(frozen=True)
class Totals:
    """The period's totals; requests include aggregate days (OpenRouter's count), spend is `usage`."""

    requests: int
    spend_usd: float
    tokens_prompt: int
    tokens_completion: int
    days_exact: int
    days_flagged: int
    days_aggregate: int
    days_missing: int


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows. `period` is None when nothing is stored in the asked-for window.

    Frames (`day` holds `datetime.date`):
    - day_status: day, requests, api_requests, capture_status, kind, note (why a day is flagged)
    - spend_by_model: day, model (display name, top TOP_MODELS + OTHER), usage (USD), kind (EXACT/AGGREGATE)
    - spend_by_api_key / spend_by_user: day, api_key / external_user, total_cost (USD), requests
    - provider_latency: model, provider, requests, avg_latency_ms (request-weighted over the period)
    Label columns are ordered by rank (largest first, OTHER last).
    """

    source: Path
    window: Period
    period: Period | None
    day_status: pandas.DataFrame
    spend_by_model: pandas.DataFrame
    spend_by_api_key: pandas.DataFrame
    spend_by_user: pandas.DataFrame
    provider_latency: pandas.DataFrame
    totals: Totals
    # hour, model, usage (USD), requests, built_at: the provisional hours of the days not yet captured
    today: pandas.DataFrame = field(default_factory=lambda: pandas.DataFrame(
        {"hour": [], "model": [], "usage": [], "requests": [], "built_at": []}))
    org: str | None = None  # the organisation shown; None: every organisation the file holds, summed
    organisations: list[str] = field(default_factory=list)  # the organisations the file holds


def read_report(path: Path, days: int, until: dt.date, org: str | None = None) -> ReportData:
    """Read the `days` days ending at `until` of organisation `org` (None: every organisation, summed) from
    the published file, opened read-only (the pipeline replaces it by atomic rename, so this connection
    keeps one consistent snapshot)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
        stored = organisations_stored(conn, tables)
        if org is not None and org not in stored:
            raise OrganisationNotStored(f"no rows of organisation {org!r} in {path} "
                                        f"(it holds {', '.join(stored) or 'none'})")
        scope_to(conn, tables, org)
        window, period = period_to_show(conn, tables, days, until)
        if period is None:
            return _empty(path, window, _today(conn, tables), org, stored)
        params = {"first": period.first, "last": period.last}
        status = _day_status(conn, tables, params)
        conn.register("report_days", status[["day", "kind"]])
        names = "model_names" in tables
        spend = _spend_by_model(conn, tables, names, params)
        keys = _spend_by(conn, tables, "daily_usage_by_api_key", "api_key", "(no key label)", params)
        users = _spend_by(conn, tables, "daily_usage_by_user", "external_user", "(no external user)", params)
        latency = _provider_latency(conn, tables, names, params)
        tokens = _tokens(conn, tables, params)
        today = _today(conn, tables)
    totals = Totals(
        requests=int(status["requests"].sum()), spend_usd=float(spend["usage"].sum()),
        tokens_prompt=tokens[0], tokens_completion=tokens[1],
        days_exact=int((status["kind"] == EXACT).sum()), days_flagged=int((status["kind"] == FLAGGED).sum()),
        days_aggregate=int((status["kind"] == AGGREGATE).sum()), days_missing=len(period.days) - len(status))
    return ReportData(
        source=path, window=window, period=period, day_status=status,
        spend_by_model=top_and_other(spend, "model", "usage", TOP_MODELS, ["day", "kind"]),
        spend_by_api_key=top_and_other(keys, "api_key", "total_cost", TOP_SPENDERS, ["day"]),
        spend_by_user=top_and_other(users, "external_user", "total_cost", TOP_SPENDERS, ["day"]),
        provider_latency=latency, totals=totals, today=today, org=org, organisations=stored)


def _today(conn: duckdb.DuckDBPyConnection, tables: set[str]) -> pandas.DataFrame:
    """`usage_today`'s hours per model (provisional: what push stored of the days not yet captured), named
    as the day charts name them: the stored model (a dated permaslug on the live API) mapped to its label
    through `model_names`; the top TOP_MODELS by spend, the rest as OTHER."""
    if "usage_today" not in tables:
        return pandas.DataFrame({"hour": [], "model": [], "usage": [], "requests": [], "built_at": []})
    names = "model_names" in tables
    join = f"LEFT JOIN ({_MODEL_NAMES}) names ON names.key = t.model" if names else ""
    name = "names.name, " if names else ""
    hours = _query(conn, f"""SELECT hour, coalesce({name}t.model, '(unknown model)') AS model, fsum(usage) AS usage,
                                    sum(requests) AS requests, max(max(built_at)) OVER () AS built_at
                             FROM usage_today t {join} GROUP BY ALL ORDER BY hour, model""", {})
    return top_and_other(hours, "model", "usage", TOP_MODELS, ["hour", "built_at"]) if not hours.empty else hours


def top_and_other(frame: pandas.DataFrame, label: str, value: str, top: int, by: list[str]) -> pandas.DataFrame:
    """Keep the `top` labels of largest total `value` and sum the rest into OTHER, per `by` columns;
    rows come ordered by the label's rank (OTHER last), then by `by`."""
    ranked = frame.groupby(label)[value].sum().sort_values(ascending=False, kind="stable")
    keep = list(ranked.index[:top]) if len(ranked) > top + 1 else list(ranked.index)
    labelled = frame.assign(**{label: frame[label].where(frame[label].isin(keep), OTHER)})
    numbers = [c for c in frame.columns if c not in (label, *by)]
    grouped = labelled.groupby([label, *by], as_index=False)[numbers].sum()
    order = {name: rank for rank, name in enumerate([*keep, OTHER])}
    grouped = grouped.assign(_rank=grouped[label].map(order)).sort_values(["_rank", *by], kind="stable")
    return grouped.drop(columns="_rank").reset_index(drop=True)


def _query(conn: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object]) -> pandas.DataFrame:
    """A query's frame with `day` as `datetime.date` (DuckDB hands dates to pandas as timestamps)."""
    used = {name: value for name, value in params.items() if f"${name}" in sql}
    frame = conn.execute(sql, used).df()
    if "day" in frame.columns:
        frame["day"] = pandas.to_datetime(frame["day"]).dt.date
    return frame


def _day_status(conn: duckdb.DuckDBPyConnection, tables: set[str], params: Mapping[str, object]) -> pandas.DataFrame:
    """One row per stored day; a day only in `history_by_model` counts as aggregate."""
    parts = []
    if "daily_totals" in tables:
        parts.append("""SELECT day, requests, api_requests, capture_status FROM daily_totals
                        WHERE day BETWEEN $first AND $last""")
    if "history_by_model" in tables:
        known = "AND day NOT IN (SELECT day FROM daily_totals)" if "daily_totals" in tables else ""
        parts.append(f"""SELECT day, CAST(sum(requests) AS BIGINT), CAST(NULL AS BIGINT), '{AGGREGATE}'
                         FROM history_by_model WHERE day BETWEEN $first AND $last {known} GROUP BY day""")
    frame = _query(conn, " UNION ALL ".join(parts) + " ORDER BY day", params)
    differs = frame["api_requests"].notna() & (frame["api_requests"] != frame["requests"])
    aggregate = frame["capture_status"] == AGGREGATE
    flagged = ~aggregate & ((frame["capture_status"] != "complete") | differs)
    frame["kind"] = [AGGREGATE if a else FLAGGED if f else EXACT for a, f in zip(aggregate, flagged, strict=True)]
    frame["note"] = [_flag_note(status, bool(d), requests, api) if kind == FLAGGED else ""
                     for kind, status, d, requests, api in zip(frame["kind"], frame["capture_status"], differs,
                                                               frame["requests"], frame["api_requests"], strict=True)]
    frame["requests"] = frame["requests"].fillna(0).astype("int64")
    return frame


def _flag_note(status: str, differs: bool, requests: int, api_requests: int | None) -> str:
    """Why a captured day is not exact, in the words of the capture proof."""
    reasons = ([] if status == "complete" else ["organisations differ in capture status"] if status == MIXED
               else [f"capture_status {status!r}"])
    if differs and api_requests is not None:
        reasons.append(f"captured {int(requests):,} ≠ OpenRouter's {int(api_requests):,}")
    return "; ".join(reasons)


def _spend_by_model(conn: duckdb.DuckDBPyConnection, tables: set[str], names: bool,
                    params: Mapping[str, object]) -> pandas.DataFrame:
    """Exact days' `daily_usage.usage` by model name (slug when unnamed), aggregate days' `history_by_model`."""
    parts = []
    if "daily_usage" in tables:
        join = f"LEFT JOIN ({_MODEL_NAMES}) names ON names.key = u.model" if names else ""
        name = _label(conn, "daily_usage", "u") + ("names.name, " if names else "")
        parts.append(f"""SELECT u.day, coalesce({name}u.model, '(unknown model)') AS model, fsum(u.usage) AS usage,
                                '{EXACT}' AS kind
                         FROM daily_usage u JOIN report_days r ON r.day = u.day AND r.kind != '{AGGREGATE}' {join}
                         WHERE u.day BETWEEN $first AND $last GROUP BY ALL""")
    if "history_by_model" in tables:
        parts.append(f"""SELECT h.day, coalesce(h.model_label, '(unknown model)'), fsum(h.usage), '{AGGREGATE}'
                         FROM history_by_model h JOIN report_days r ON r.day = h.day AND r.kind = '{AGGREGATE}'
                         WHERE h.day BETWEEN $first AND $last GROUP BY ALL""")
    if not parts:
        return pandas.DataFrame({"day": [], "model": [], "usage": [], "kind": []})
    return _query(conn, " UNION ALL ".join(parts) + " ORDER BY 1, 2", params)


def _spend_by(conn: duckdb.DuckDBPyConnection, tables: set[str], table: str, label: str, unnamed: str,
              params: Mapping[str, object]) -> pandas.DataFrame:
    """Spend (`total_cost`: these tables have no `usage`) and requests per day and label; exact days only."""
    if table not in tables:
        return pandas.DataFrame({"day": [], label: [], "total_cost": [], "requests": []})
    return _query(conn, f"""SELECT day, coalesce({label}, '{unnamed}') AS {label}, fsum(total_cost) AS total_cost,
                                   CAST(sum(requests) AS BIGINT) AS requests
                            FROM {table} WHERE day BETWEEN $first AND $last GROUP BY ALL ORDER BY 1, 2""", params)


def _provider_latency(conn: duckdb.DuckDBPyConnection, tables: set[str], names: bool,
                      params: Mapping[str, object]) -> pandas.DataFrame:
    """Each provider's request-weighted average latency for the LATENCY_MODELS models of most spend."""
    if not {"daily_usage", "daily_usage_by_provider"} <= tables:
        return pandas.DataFrame({"model": [], "provider": [], "requests": [], "avg_latency_ms": []})
    join = f"LEFT JOIN ({_MODEL_NAMES}) names ON names.key = p.model" if names else ""
    name = _label(conn, "daily_usage_by_provider", "p") + ("names.name, " if names else "")
    return _query(conn, f"""
        WITH top AS (SELECT model, row_number() OVER (ORDER BY fsum(usage) DESC, model) AS rank FROM daily_usage
                     WHERE day BETWEEN $first AND $last GROUP BY model ORDER BY rank LIMIT {LATENCY_MODELS})
        SELECT coalesce({name}p.model, '(unknown model)') AS model,
               coalesce(p.provider, '(unknown provider)') AS provider, CAST(sum(p.requests) AS BIGINT) AS requests,
               sum(p.avg_latency_ms * p.requests)
                   / nullif(sum(p.requests) FILTER (WHERE p.avg_latency_ms IS NOT NULL), 0) AS avg_latency_ms
        FROM daily_usage_by_provider p JOIN top ON p.model IS NOT DISTINCT FROM top.model {join}
        WHERE p.day BETWEEN $first AND $last
        GROUP BY ALL ORDER BY any_value(top.rank), requests DESC, provider""", params)


def _label(conn: duckdb.DuckDBPyConnection, table: str, alias: str) -> str:
    """`alias.model_label, ` when the table has the label the summary stored (files before it have none)."""
    (present,) = conn.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() AND table_name = ? "
        "AND column_name = 'model_label'", [table]).fetchall()[0]
    return f"{alias}.model_label, " if present else ""


def _tokens(conn: duckdb.DuckDBPyConnection, tables: set[str], params: Mapping[str, object]) -> tuple[int, int]:
    """Prompt and completion tokens: exact days from `daily_usage`, aggregate days from `history_by_model`."""
    prompt = completion = 0
    for table, kind in (("daily_usage", f"!= '{AGGREGATE}'"), ("history_by_model", f"= '{AGGREGATE}'")):
        if table in tables:
            row = conn.execute(f"""SELECT coalesce(sum(t.tokens_prompt), 0), coalesce(sum(t.tokens_completion), 0)
                                   FROM {table} t JOIN report_days r ON r.day = t.day AND r.kind {kind}
                                   WHERE t.day BETWEEN $first AND $last""", params).fetchall()[0]
            prompt, completion = prompt + int(row[0]), completion + int(row[1])
    return prompt, completion


def _empty(path: Path, window: Period, today: pandas.DataFrame, org: str | None,
           organisations: list[str]) -> ReportData:
    status = pandas.DataFrame({c: [] for c in ("day", "requests", "api_requests", "capture_status", "kind", "note")})
    return ReportData(
        source=path, window=window, period=None, day_status=status,
        spend_by_model=pandas.DataFrame({"day": [], "model": [], "usage": [], "kind": []}),
        spend_by_api_key=pandas.DataFrame({"day": [], "api_key": [], "total_cost": [], "requests": []}),
        spend_by_user=pandas.DataFrame({"day": [], "external_user": [], "total_cost": [], "requests": []}),
        provider_latency=pandas.DataFrame({"model": [], "provider": [], "requests": [], "avg_latency_ms": []}),
        totals=Totals(0, 0.0, 0, 0, 0, 0, 0, 0), today=today, org=org, organisations=organisations)
