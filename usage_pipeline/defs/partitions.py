"""Daily UTC partitions, one per completed day, from USAGE_START_DATE (default: 30 days ago).

The one setting read when the code location loads: Dagster needs the start date to list the partitions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DailyPartitionsDefinition, Failure

from usage_pipeline.openrouter.day import DayOutOfRange, check_capturable
from usage_pipeline.settings import SettingError, setting


def start_date() -> str:
    configured: dt.date | None = setting("USAGE_START_DATE")
    return (configured or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)).isoformat()


# end_offset=0: the newest partition is yesterday, the last *completed* UTC day.
daily_partitions = DailyPartitionsDefinition(start_date=start_date(), timezone="UTC", end_offset=0)


def partition_day(partition_key: str) -> dt.date:
    """The partition's day, or a one-line Failure when the key is not one."""
    try:
        return dt.date.fromisoformat(partition_key)
    except (TypeError, ValueError):
        raise Failure(description=f"partition key {partition_key!r} is not a day: it must be YYYY-MM-DD",
                      allow_retries=False) from None


def capturable_day(partition_key: str) -> dt.date:
    """The partition's day, or a Failure saying why OpenRouter can no longer (or not yet) enumerate it."""
    day = partition_day(partition_key)
    try:
        check_capturable(day)
    except DayOutOfRange as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    return day


@contextmanager
def settings_checked() -> Iterator[None]:
    """A bad setting fails the step with its one-line message (no traceback of the parser)."""
    try:
        yield
    except SettingError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
