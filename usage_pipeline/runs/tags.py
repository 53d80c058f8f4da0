"""What the tags Dagster puts on a run say about it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from dagster._core.storage.tags import (  # Dagster's own names for the tags it puts on runs
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    MULTIDIMENSIONAL_PARTITION_PREFIX,
    PARTITION_NAME_TAG,
)

ORG_TAG = f"{MULTIDIMENSIONAL_PARTITION_PREFIX}org"  # dagster/partition/org: a ledger run's organisation


def _partition_key(tags: Mapping[str, str]) -> str | None:
    """Scheduled and sensor runs carry `dagster/partition`, asset backfill runs a one-partition range."""
    key = tags.get(PARTITION_NAME_TAG)
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if not key and start and start == end:
        key = start
    return key or None


def run_day(tags: Mapping[str, str]) -> dt.date | None:
    """The day a run was for; a ledger partition key reads `2026-06-12|acme` (day, then organisation)."""
    key = _partition_key(tags)
    return dt.date.fromisoformat(key.partition("|")[0]) if key else None


def run_org(tags: Mapping[str, str]) -> str | None:
    """The organisation a run was for: its `dagster/partition/org` tag, or the key's second part."""
    key = _partition_key(tags) or ""
    return tags.get(ORG_TAG) or key.partition("|")[2] or None
