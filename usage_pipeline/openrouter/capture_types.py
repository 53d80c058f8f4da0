"""What a day's capture reports, and the two interfaces its parts meet at.

`capture.DayCapture` runs `fetching.DayFetch`; the fetching side sees the capture only through
`CaptureSide`, so neither module imports the other's class (no import circle). `StoredRecords` is how a
ledger that already holds part of the day takes part without this package knowing about InfluxDB: it is
asked per window which ids need no fetch, and told when a window's records are all written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from usage_pipeline.openrouter.client import ANALYTICS_MAX_ROWS, OpenRouterClient
from usage_pipeline.openrouter.enumeration import IdWindow
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.records import RecordRetries
from usage_pipeline.openrouter.windows import Bucket, Window


@dataclass
class CaptureReport:
    """What a capture did, for the run's metadata and for the checks."""

    day: str
    expected_from_counts: int = 0
    count_queries: int = 1  # the hourly request_count, plus minute counts for dense 3-hour blocks
    windows_queried: int = 0
    windows_split: int = 0
    analytics_queries: int = 0
    row_limit: int = ANALYTICS_MAX_ROWS
    ids_enumerated: int = 0
    records_reused: int = 0  # already stored whole (StoredRecords said so): not fetched again
    records_fetched: int = 0
    duplicate_ids_across_windows: int = 0
    next_day_ids_skipped: int = 0  # answered by a server whose time_range.end is inclusive
    missing: list[str] = field(default_factory=list)
    missing_reasons: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    retries: int = 0
    throttled: int = 0  # 429s met by record fetches, of either kind
    throttled_lone: int = 0  # of which without rate-limit headers: only their own request waited
    account_pauses: int = 0  # times every request paused (an exhausted budget, a round trip of 429s)
    paused_s: float = 0.0
    hedged: int = 0  # slow record requests raced by a second one
    twinned: int = 0  # of those, the day's last requests, raced from the start (the window's budget had room)
    fetch_requests: int = 0
    batches: int = 0  # hand-overs to the caller (records stream out in batches, not whole windows)
    peak_in_flight: int = 0
    peak_open_windows: int = 0
    final_limit: float = 0.0
    learned_rps: float = 0.0  # the pace learned from the server's X-RateLimit-* answers (0: none)
    fetch_p50_ms: float = 0.0
    fetch_p99_ms: float = 0.0
    fetch_seconds: float = 0.0  # from the first record request to the last answer
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        """Every enumerated id is accounted for: fetched, reused from the ledger, or the next day's."""
        return (not self.missing and not self.invalid
                and self.records_fetched + self.records_reused + self.next_day_ids_skipped == self.ids_enumerated)

    @property
    def records_per_second(self) -> float:
        return self.records_fetched / self.fetch_seconds if self.fetch_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StoredRecords(Protocol):
    """A ledger's side of a capture: what it holds already, and when a window is done."""

    def window_opened(self, window: Window, ids: Mapping[str, Any]) -> Collection[str]:
        """Called on the enumeration's worker thread for each window before any of its records is fetched,
        with its ids -> API key label as analytics answered: the ids stored whole, not to be fetched."""
        ...

    def window_closed(self, window: Window) -> None:
        """Called on the caller's thread once every record of `window` was handed over and its batch
        acknowledged: the ledger may forget what it kept for the window."""
        ...


class IdSource(Protocol):
    """Where the ids to fetch come from: a day's enumeration (`DayEnumeration`), or the push journal."""

    def count_buckets(self) -> list[Bucket]: ...

    def windows(self, buckets: list[Bucket]) -> Iterator[IdWindow]: ...


class CaptureSide(Protocol):
    """What the fetching thread needs from the capture that runs it."""

    client: OpenRouterClient
    day: dt.date
    report: CaptureReport
    retries: RecordRetries
    stored: StoredRecords | None

    @property
    def enumeration(self) -> IdSource: ...

    def accept(self, gen_id: str, api_key: Any, data: dict[str, Any]) -> Generation | None: ...

    def missing(self, gen_id: str, reason: str) -> None: ...
