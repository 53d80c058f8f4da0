"""Daily UTC partitions, one per completed day, from USAGE_START_DATE (default: 30 days ago)."""

from __future__ import annotations

import datetime as dt
import os

from dagster import DailyPartitionsDefinition, Failure

from usage_pipeline.openrouter.day import DayOutOfRange, check_capturable


def start_date() -> str:
    configured = os.environ.get("USAGE_START_DATE")
    if configured:
        try:
            return dt.date.fromisoformat(configured).isoformat()
        except ValueError as exc:
            raise ValueError(f"USAGE_START_DATE must be YYYY-MM-DD, got {configured!r}") from exc
    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=30)).isoformat()


# end_offset=0: the newest partition is yesterday, the last *completed* UTC day.
daily_partitions = DailyPartitionsDefinition(start_date=start_date(), timezone="UTC", end_offset=0)


def capturable_day(partition_key: str) -> dt.date:
    """The partition's day, or a Failure saying why OpenRouter can no longer (or not yet) enumerate it."""
    day = dt.date.fromisoformat(partition_key)
    try:
        check_capturable(day)
    except DayOutOfRange as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    return day
