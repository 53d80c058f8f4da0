"""Which days the report covers: the asked-for window, trimmed to where the file's history begins.

The window ends at a given day (by default the last completed UTC day, the newest the pipeline can
have), not at the newest stored day, so days the pipeline has not published yet show as missing.
It starts no earlier than the oldest stored day, so a year's window over a week of history reports a
week, not 358 missing days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

_DAY_TABLES = ("daily_totals", "history_by_model")  # the tables whose rows say a day is stored


@dataclass(frozen=True)
class Period:
    """Consecutive UTC days, both ends included."""

    first: dt.date
    last: dt.date

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def __str__(self) -> str:
        return self.first.isoformat() if self.first == self.last else f"{self.first} – {self.last}"


def last_completed_day(now: dt.datetime | None = None) -> dt.date:
    """Yesterday in UTC: the newest day a daily run can have captured."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date() - dt.timedelta(days=1)


def period_to_show(conn: duckdb.DuckDBPyConnection, tables: set[str], days: int,
                   until: dt.date) -> tuple[Period, Period | None]:
    """The window of `days` days ending at `until`, and the part of it to show (None: nothing stored in it)."""
    window = Period(until - dt.timedelta(days=days - 1), until)
    sources = [table for table in _DAY_TABLES if table in tables]
    if not sources:
        return window, None
    union = " UNION ALL ".join(
        f"SELECT min(day) AS oldest, count(*) FILTER (WHERE day BETWEEN $first AND $last) AS inside FROM {table}"
        for table in sources)
    oldest, inside = conn.execute(f"SELECT min(oldest), sum(inside) FROM ({union})",
                                  {"first": window.first, "last": window.last}).fetchall()[0]
    if not inside:
        return window, None
    return window, Period(max(window.first, oldest), window.last)
