"""What the tags Dagster puts on a run say about it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from dagster._core.storage.tags import (  # Dagster's own names for the tags it puts on runs
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)


def run_day(tags: Mapping[str, str]) -> dt.date | None:
    """The day a run was for: scheduled and sensor runs carry `dagster/partition`, asset backfill runs a
    one-day partition range."""
    key = tags.get(PARTITION_NAME_TAG)
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if not key and start and start == end:
        key = start
    return dt.date.fromisoformat(key) if key else None
