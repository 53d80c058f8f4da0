"""Records on their way from the fetches to the caller: streamed in batches, while windows stay accountable.

A window used to be handed over whole, so one record in 404 back-off held back thousands fetched beside
it. Now every accepted record goes into the outbox at once, and a batch leaves when it is big enough
(`batch_size`) or its oldest record has waited `max_age_s`, or when a window's last id settles (nothing
more will come from it). Memory stays bounded by the open windows, not the day: a window is open until its
ids are all settled (fetched, given up on, or skipped) *and* the caller has acknowledged every batch that
carried its records, and the capture opens a new window only when one closes.

Pure bookkeeping: no asyncio, no clock of its own (callers pass `now`), so it is tested alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.windows import Window


@dataclass(eq=False)  # identity, not value: two windows are never the same window
class OpenWindow:
    """One enumerated window while any of its ids is unsettled or any of its records is unwritten."""

    window: Window
    no: int  # enumeration order: older windows' jobs go first, they hold memory
    unsettled: int  # ids neither answered for good nor given up on
    unwritten: int = 0  # records accepted but not yet acknowledged by the caller
    closed: bool = False

    @property
    def done(self) -> bool:
        return not self.closed and self.unsettled == 0 and self.unwritten == 0


@dataclass
class Batch:
    """Records handed to the caller together, and how many came from each window."""

    records: list[Generation]
    windows: Counter[OpenWindow] = field(default_factory=Counter)


class RecordOutbox:
    """Accepted records waiting to be handed over; `add`/`due`/`take` give batches, `written` settles them."""

    def __init__(self, batch_size: int, max_age_s: float) -> None:
        if batch_size < 1 or max_age_s <= 0:
            raise ValueError(f"batch_size must be >= 1 and max_age_s > 0, got {batch_size}, {max_age_s}")
        self.batch_size = batch_size
        self.max_age_s = max_age_s
        self._pending: list[Generation] = []
        self._windows: Counter[OpenWindow] = Counter()
        self._oldest: float | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, record: Generation, window: OpenWindow, now: float) -> Batch | None:
        """Queue one accepted record of `window`; the batch to hand over when this one filled it."""
        if not self._pending:
            self._oldest = now
        self._pending.append(record)
        self._windows[window] += 1
        window.unwritten += 1
        return self.take() if len(self._pending) >= self.batch_size else None

    def due(self, now: float) -> Batch | None:
        """The pending records as a batch if the oldest has waited `max_age_s`, else None."""
        if self._oldest is not None and now - self._oldest >= self.max_age_s - 1e-9:
            return self.take()
        return None

    def next_due(self) -> float | None:
        """When the pending records are due (None: nothing pending)."""
        return None if self._oldest is None else self._oldest + self.max_age_s

    def take(self) -> Batch | None:
        """Everything pending as one batch (None when nothing is)."""
        if not self._pending:
            return None
        batch = Batch(self._pending, self._windows)
        self._pending, self._windows, self._oldest = [], Counter(), None
        return batch

    @staticmethod
    def settled(window: OpenWindow) -> None:
        """One id of `window` is settled for good (a record, a miss, a skip)."""
        if window.unsettled <= 0:
            raise ValueError(f"window {window.window} has no unsettled id left")
        window.unsettled -= 1

    @staticmethod
    def written(batch: Batch) -> list[OpenWindow]:
        """The caller acknowledged `batch`: the windows that are now done (to close, once each)."""
        for window, count in batch.windows.items():
            window.unwritten -= count
        return [window for window in batch.windows if window.done]
