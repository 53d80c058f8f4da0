"""One UTC day of generations as an immutable snapshot, and the generation id that names one of its rows.

Its own module so that the day store (`dataset`) and the record builders (`generation_record`,
`live_shapes`) can both use it without importing each other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from openrouter_emulator.columns import DayColumns
from openrouter_emulator.isotime import US_PER_SECOND


@dataclass(frozen=True, slots=True)
class UsageDay:
    """An immutable snapshot of one UTC day; adding late generations replaces the snapshot."""

    date: dt.date
    columns: DayColumns

    def visible(self, now: float) -> np.ndarray:
        return self.columns.visible_at <= now

    def generation_id(self, row: int) -> str:
        seconds = int(self.columns.created_us[row]) // US_PER_SECOND
        return f"gen-{seconds}-{self.columns.id_suffix[row].decode()}"

    def generation_ids(self, rows: np.ndarray) -> list[str]:
        seconds = (self.columns.created_us[rows] // US_PER_SECOND).tolist()
        return [f"gen-{s}-{x.decode()}" for s, x in zip(seconds, self.columns.id_suffix[rows].tolist(), strict=False)]

    def locate(self, seconds: int, suffix: bytes) -> int | None:
        """The row of `gen-<seconds>-<suffix>`: a binary search on time, then a scan of that second."""
        created = self.columns.created_us
        lo = int(np.searchsorted(created, seconds * US_PER_SECOND, side="left"))
        hi = int(np.searchsorted(created, (seconds + 1) * US_PER_SECOND, side="left"))
        hits = np.flatnonzero(self.columns.id_suffix[lo:hi] == suffix)
        return lo + int(hits[0]) if len(hits) else None


def parse_generation_id(gen_id: str) -> tuple[int, bytes] | None:
    """(unix seconds, 20-character suffix) of `gen-<seconds>-<suffix>`, or None for anything else."""
    parts = gen_id.split("-")
    if len(parts) != 3 or parts[0] != "gen" or not parts[1].isdigit() or len(parts[2]) != 20:
        return None
    try:
        return int(parts[1]), parts[2].encode("ascii")
    except UnicodeEncodeError:
        return None
