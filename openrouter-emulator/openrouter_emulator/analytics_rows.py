"""What the analytics engine groups: the visible generations of a time range and the history cells in it.

Both become `Facts`: rows that each stand for some requests (a generation for one, a history cell for
many) with their category codes and metric sums, so one grouping serves both and a query spanning
generation days and aggregate-only days adds them up the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openrouter_emulator.analytics_catalogue import KEY_MEMBER, KEY_WORKSPACE
from openrouter_emulator.columns import BYOK, DayColumns
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.history import Cells
from openrouter_emulator.isotime import US_PER_DAY, US_PER_SECOND, day_start_us
from openrouter_emulator.organisation import ENDPOINT_PROVIDER

# Metric -> the generation column it sums; history cells carry the same sums under the same names.
METRIC_COLUMNS = {"total_usage": "usage", "tokens_prompt": "tokens_prompt", "tokens_completion": "tokens_completion",
                  "reasoning_tokens": "tokens_reasoning", "cached_tokens": "tokens_cached"}


class Selection:
    """The visible generations inside a time range ([start, end), or [start, end] when `inclusive_end`)."""

    def __init__(self, dataset: UsageDataset, start_us: int, end_us: int, now: float,
                 inclusive_end: bool = False) -> None:
        self.parts: list[tuple[DayColumns, np.ndarray]] = []
        for date in dataset.dates(now):
            first = day_start_us(date)
            if first + US_PER_DAY <= start_us or first > end_us or (first == end_us and not inclusive_end):
                continue
            day = dataset.day(date, now)
            if day is None:
                continue
            c = day.columns
            lo = int(np.searchsorted(c.created_us, start_us, side="left"))
            hi = int(np.searchsorted(c.created_us, end_us, side="right" if inclusive_end else "left"))
            rows = lo + np.flatnonzero(c.visible_at[lo:hi] <= now)
            if len(rows):
                self.parts.append((c, rows))
        self.size = sum(len(rows) for _, rows in self.parts)
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            arrays = [getattr(c, name)[rows] for c, rows in self.parts]
            self._columns[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        return self._columns[name]

    def codes(self, dimension: str) -> np.ndarray:
        """Category codes of a dimension per row, -1 where the generation has no value."""
        if dimension == "model":
            return self.column("model").astype(np.int64)
        if dimension == "provider":
            return ENDPOINT_PROVIDER[self.column("endpoint")].astype(np.int64)
        if dimension == "api_key_id":
            return self.column("api_key").astype(np.int64)
        if dimension == "external_user":
            return self.column("external_user").astype(np.int64)
        if dimension == "finish_reason":
            return self.column("finish").astype(np.int64)
        if dimension in ("origin", "app"):
            return self.column("app").astype(np.int64)
        if dimension == "user":
            return KEY_MEMBER[self.column("api_key")]
        if dimension == "workspace":
            return KEY_WORKSPACE[self.column("api_key")]
        raise KeyError(dimension)

    def id_bytes(self) -> np.ndarray:
        """Every row's generation id as fixed-width bytes, for vectorised filtering and ordering."""
        if "id_bytes" not in self._columns:
            seconds = (self.column("created_us") // US_PER_SECOND).astype("S10")
            prefix = np.char.add(np.char.add(b"gen-", seconds), b"-")
            self._columns["id_bytes"] = np.char.add(prefix, self.column("id_suffix"))
        return self._columns["id_bytes"]

    def ids(self, positions: np.ndarray) -> list[str]:
        seconds = (self.column("created_us")[positions] // US_PER_SECOND).tolist()
        suffixes = self.column("id_suffix")[positions].tolist()
        return [f"gen-{s}-{x.decode()}" for s, x in zip(seconds, suffixes, strict=False)]


@dataclass(frozen=True, slots=True)
class Facts:
    """Rows to group. `sums[metric]` is each row's contribution (`request_count` its weight, `avg_latency`
    its latency sum); `selection` and `positions` are set when the rows are generations only."""

    time_us: np.ndarray  # a generation's created_us; a history cell's day start
    codes: dict[str, np.ndarray]  # dimension -> category code per row (-1: none)
    sums: dict[str, np.ndarray]  # float64 per row
    selection: Selection | None = None
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time_us)

    def then(self, other: Facts) -> Facts:
        """These rows followed by `other`'s (history cells come first: they are older)."""
        if not len(self):
            return other
        if not len(other):
            return self
        return Facts(np.concatenate([self.time_us, other.time_us]),
                     {d: np.concatenate([c, other.codes[d]]) for d, c in self.codes.items()},
                     {m: np.concatenate([v, other.sums[m]]) for m, v in self.sums.items()})


def generation_facts(selection: Selection, positions: np.ndarray, dimensions: tuple[str, ...],
                     metrics: tuple[str, ...]) -> Facts:
    if not len(positions):
        return Facts(np.zeros(0, dtype=np.int64), {}, {})

    def column(name: str) -> np.ndarray:
        return selection.column(name)[positions]

    sums: dict[str, np.ndarray] = {"request_count": np.ones(len(positions))}
    for name in metrics:
        if name == "byok_request_count":
            sums[name] = ((column("flags") & BYOK) > 0).astype(np.float64)
        elif name == "tokens_total":
            sums[name] = column("tokens_prompt").astype(np.float64) + column("tokens_completion")
        elif name == "avg_latency":
            sums[name] = column("latency_ms").astype(np.float64)
        elif name in METRIC_COLUMNS:
            sums[name] = column(METRIC_COLUMNS[name]).astype(np.float64)
    codes = {d: selection.codes(d)[positions] for d in dimensions if d != "generation_id"}
    return Facts(column("created_us"), codes, sums, selection, positions)


def cell_codes(cells: Cells, dimension: str) -> np.ndarray:
    """Category codes of a 365-day dimension per cell."""
    if dimension == "model":
        return cells.model
    if dimension == "api_key_id":
        return cells.api_key
    if dimension == "app":
        return cells.app
    if dimension == "user":
        return KEY_MEMBER[cells.api_key]
    if dimension == "workspace":
        return KEY_WORKSPACE[cells.api_key]
    raise KeyError(dimension)


def cell_facts(cells: Cells, dimensions: tuple[str, ...], metrics: tuple[str, ...]) -> Facts:
    sums: dict[str, np.ndarray] = {"request_count": cells.requests.astype(np.float64)}
    for name in metrics:
        if name == "byok_request_count":
            sums[name] = cells.byok.astype(np.float64)
        elif name == "tokens_total":
            sums[name] = (cells.tokens_prompt + cells.tokens_completion).astype(np.float64)
        elif name == "avg_latency":
            sums[name] = cells.latency_sum
        elif name in METRIC_COLUMNS:
            sums[name] = getattr(cells, METRIC_COLUMNS[name]).astype(np.float64)
    return Facts(cells.day_us, {d: cell_codes(cells, d) for d in dimensions}, sums)
