"""The usage report: one self-contained HTML file drawn from the published DuckDB file.

figures (DuckDB -> frames) and period (which days) read; charts (frames -> plotly figures) and page
(figures -> HTML) draw. Only this module touches the file system.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from usage_pipeline.report.charts import build_charts
from usage_pipeline.report.figures import ReportData, read_report
from usage_pipeline.report.page import render_page
from usage_pipeline.report.period import last_completed_day
from usage_pipeline.report.scope import OrganisationNotStored

DEFAULT_DAYS = 365
DEFAULT_OUT = Path("data/usage_report.html")


class ReportError(ValueError):
    """Bad input for a report (a missing or unreadable file, a bad number of days); the message is one line."""


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    bytes: int
    data: ReportData

    def summary(self) -> str:
        """One line: the period, its days by kind, requests and spend."""
        data, t = self.data, self.data.totals
        if data.period is None:
            return f"no data stored for {data.window} in {data.source} ({self.bytes:,} bytes)"
        flagged = f", {t.days_flagged} flagged" if t.days_flagged else ""
        return (f"{data.period}: {len(data.period.days)} days ({t.days_exact} exact{flagged}, {t.days_aggregate} "
                f"aggregate, {t.days_missing} missing), {t.requests:,} requests, ${t.spend_usd:,.2f} "
                f"({self.bytes / 1e6:.1f} MB)")


def write_report(out: Path = DEFAULT_OUT, *, duckdb_path: Path | None = None, days: int = DEFAULT_DAYS,
                 until: dt.date | None = None, built_at: dt.datetime | None = None,
                 org: str | None = None) -> WrittenReport:
    """Write the report of the `days` days ending at `until` (default: yesterday, UTC) to `out`, of
    organisation `org` (default: every organisation the file holds, summed).

    `duckdb_path` defaults to USAGE_DUCKDB_PATH (a bad value raises the settings' one-line SettingError).
    The file is written beside `out` and renamed over it, so a browser never opens half a report.
    """
    if days < 1:
        raise ReportError(f"--days must be a whole number of at least 1, got {days}")
    if duckdb_path is None:
        from usage_pipeline.defs.resources import DailyUsageDatabase

        duckdb_path = DailyUsageDatabase().published
    if not duckdb_path.is_file():
        raise ReportError(f"no DuckDB file at {duckdb_path} (set USAGE_DUCKDB_PATH or --duckdb; "
                          f"the pipeline or `usage-pipeline demo` writes it)")
    try:
        data = read_report(duckdb_path, days, until or last_completed_day(), org)
    except OrganisationNotStored as exc:
        raise ReportError(str(exc)) from None
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"cannot read {duckdb_path}: {first_line}") from exc
    document = render_page(data, build_charts(data), built_at or dt.datetime.now(dt.UTC))
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(document, encoding="utf-8")
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return WrittenReport(path=out, bytes=out.stat().st_size, data=data)


__all__ = ["DEFAULT_DAYS", "DEFAULT_OUT", "ReportError", "WrittenReport", "write_report"]
