"""The fetch thread's end of the hand-over: accepted records into the outbox, batches across to the
caller's thread, acknowledgements back, and each window closed once it is done.

Kept apart from the dispatcher (`fetching`), which decides what to fetch and when; this decides when what
was fetched leaves, and knows nothing of HTTP. Runs on the fetch thread's event loop; the caller's thread
only ever calls the `written` callback a batch carries, which hops back onto that loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter.capture_types import CaptureReport
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.outbox import Batch, OpenWindow, RecordOutbox
from usage_pipeline.openrouter.windows import Window

BATCH_RECORDS = 5000  # a batch leaves the outbox at this size (the ledger's InfluxDB write batch) ...
BATCH_AGE_S = 1.0  # ... or when its oldest record has waited this long


@dataclass(frozen=True)
class WindowClosed:
    """Handed to the caller's thread: every record of `window` was handed over and acknowledged."""

    window: Window


class Handover:
    """Streams records to the caller's thread (`hand_over` puts on its queue) and closes done windows."""

    def __init__(self, hand_over: Callable[[Any], None], report: CaptureReport,
                 on_closed: Callable[[OpenWindow], None], *, notify_closed: bool,
                 batch_records: int = BATCH_RECORDS, batch_age_s: float = BATCH_AGE_S) -> None:
        self.hand_over = hand_over
        self.report = report
        self.on_closed = on_closed
        self.notify_closed = notify_closed  # tell the caller (a ledger keeping per-window state)
        self.outbox = RecordOutbox(batch_records, batch_age_s)
        self._timer: asyncio.TimerHandle | None = None

    def record(self, record: Generation, window: OpenWindow) -> None:
        """An accepted record: it leaves with the next batch, whatever the rest of its window is doing."""
        self.report.records_fetched += 1
        self._hand(self.outbox.add(record, window, time.monotonic()))
        if len(self.outbox) == 1:
            self._flush_later(self.outbox.max_age_s)

    def settled(self, window: OpenWindow) -> None:
        """One id of `window` is settled for good; a window with nothing left to fetch flushes what is
        pending, so it can close as soon as the caller has written it."""
        self.outbox.settled(window)
        if window.unsettled == 0:
            self._hand(self.outbox.take())
            if window.done:
                self.close(window)

    def close(self, window: OpenWindow) -> None:
        window.closed = True
        if self.notify_closed:
            self.hand_over(WindowClosed(window.window))
        self.on_closed(window)

    def _flush_later(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        self._hand(self.outbox.due(time.monotonic()))
        due = self.outbox.next_due()
        if due is not None:
            self._flush_later(max(0.0, due - time.monotonic()))

    def _hand(self, batch: Batch | None) -> None:
        """Hand a batch over; its windows' records count as written once the caller says so."""
        if batch is None:
            return
        self.report.batches += 1
        loop = asyncio.get_running_loop()

        def written() -> None:
            try:
                loop.call_soon_threadsafe(self._written, batch)
            except RuntimeError:  # the loop is closed: the run already ended with a failure the caller sees
                pass

        self.hand_over((batch.records, written))

    def _written(self, batch: Batch) -> None:
        for window in self.outbox.written(batch):
            self.close(window)
