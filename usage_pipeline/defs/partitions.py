"""The ledger's partitions: organisation x day. Days are UTC, one per completed day, from USAGE_START_DATE
(default: 30 days ago); organisations are dynamic partitions, added from USAGE_ORGANISATIONS by the
`organisations_from_config` sensor.

USAGE_START_DATE is the one setting read when the code location loads: Dagster needs it to list the days.
Organisations are dynamic rather than static so that adding one to the file needs no reload of the code
location, and so the definitions stay one set of objects whatever the file says.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import (
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    Failure,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PreviewWarning,
)

from usage_pipeline.openrouter.day import DayOutOfRange, check_capturable
from usage_pipeline.settings import SettingError, setting


def start_date() -> str:
    configured: dt.date | None = setting("USAGE_START_DATE")
    return (configured or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)).isoformat()


# end_offset=0: the newest partition is yesterday, the last *completed* UTC day.
daily_partitions = DailyPartitionsDefinition(start_date=start_date(), timezone="UTC", end_offset=0)
organisation_partitions = DynamicPartitionsDefinition(name="organisations")
DAY, ORG = "day", "org"  # the dimensions; a key reads "2026-06-12|acme" (Dagster orders them by name)
ledger_partitions = MultiPartitionsDefinition({DAY: daily_partitions, ORG: organisation_partitions})
# The asset's checks share these partitions, a Dagster preview in 1.13 (docs/dagster.md): chosen knowingly, so its
# warning is not repeated in every process's log. Only that one message is silenced.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning)


@dataclass(frozen=True)
class OrgDay:
    """One ledger partition: an organisation's UTC day."""

    org: str
    day: dt.date

    @property
    def key(self) -> MultiPartitionKey:
        return MultiPartitionKey({DAY: self.day.isoformat(), ORG: self.org})

    @property
    def tags(self) -> dict[str, str]:
        """The tags Dagster puts on a run of this partition (`dagster/partition`, `dagster/partition/org`, ...),
        for a run launched by hand."""
        return dict(ledger_partitions.get_tags_for_partition_key(self.key))

    def __str__(self) -> str:
        return f"{self.org} {self.day}"


def org_day(partition_key: str) -> OrgDay:
    """The organisation and day of a ledger partition key, or a one-line Failure when it is not one."""
    keys = partition_key.keys_by_dimension if isinstance(partition_key, MultiPartitionKey) else None
    if keys is None:
        day_text, _, org = str(partition_key).partition("|")
        keys = {DAY: day_text, ORG: org}
    if set(keys) != {DAY, ORG} or not keys[ORG]:
        raise Failure(description=f"partition key {partition_key!r} is not an organisation's day: it must be "
                                  "YYYY-MM-DD|<organisation>", allow_retries=False)
    return OrgDay(keys[ORG], partition_day(keys[DAY]))


def partition_day(partition_key: str) -> dt.date:
    """The partition's day, or a one-line Failure when the key is not one."""
    try:
        return dt.date.fromisoformat(partition_key)
    except (TypeError, ValueError):
        raise Failure(description=f"partition key {partition_key!r} is not a day: it must be YYYY-MM-DD",
                      allow_retries=False) from None


def capturable(partition_key: str) -> OrgDay:
    """The partition's organisation and day, or a Failure saying why OpenRouter can no longer (or not yet)
    enumerate the day."""
    partition = org_day(partition_key)
    try:
        check_capturable(partition.day)
    except DayOutOfRange as exc:
        raise Failure(description=f"{partition.org}: {exc}", allow_retries=False) from None
    return partition


@contextmanager
def settings_checked() -> Iterator[None]:
    """A bad setting fails the step with its one-line message (no traceback of the parser)."""
    try:
        yield
    except SettingError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
