"""One UTC day as OpenRouter can serve it: its bounds, and whether its generations can still be listed."""

from __future__ import annotations

import datetime as dt

GENERATION_ID_WINDOW = dt.timedelta(days=31)
EDGE = dt.timedelta(milliseconds=1)  # a server whose time_range.end is inclusive answers the next day's first ms too


class DayOutOfRange(ValueError):
    """The day cannot be captured: not complete yet, or older than the 31-day generation_id window."""


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[00:00, next day's 00:00) UTC."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def check_capturable(day: dt.date, now: dt.datetime | None = None) -> None:
    """Fail fast, with the reason, for days the generation_id dimension cannot enumerate."""
    now = now or dt.datetime.now(dt.UTC)
    start, end = day_bounds(day)
    if end > now:
        raise DayOutOfRange(f"day {day} is not complete yet (it ends {end.isoformat()}); "
                            "only completed UTC days are captured")
    if start < now - GENERATION_ID_WINDOW:
        oldest = (now - GENERATION_ID_WINDOW).date() + dt.timedelta(days=1)
        raise DayOutOfRange(
            f"day {day} is older than OpenRouter's 31-day window for the analytics generation_id dimension; "
            f"its generations can no longer be enumerated (oldest capturable day now: {oldest})")
