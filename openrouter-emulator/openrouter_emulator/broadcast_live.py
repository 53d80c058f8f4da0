"""Live Broadcast: today's generations pushed as they complete, in real time (`--broadcast-url`).

The emulator's today fills in as its timestamps pass (`dataset`), so every tick this scans the rows created
since the last one, schedules each at its completion (created_at + generation_time), and offers the due ones
to a `broadcast.Pusher`. Generations added later for today (`POST /_emulator/generations`) are pushed once
completed and visible. It builds today first (seconds for a dense day), sends the connection test, then pushes
what completes from then on (requests already running are included: it looks back an hour for them).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import heapq
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

from openrouter_emulator.broadcast import InPool, Pusher
from openrouter_emulator.broadcast_settings import (
    SETTING_NAMES,
    TOKEN_ENV,
    BroadcastSettings,
    check_settings,
    check_url,
    with_token,
)
from openrouter_emulator.broadcast_spans import delivery
from openrouter_emulator.columns import LATE
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.isotime import US_PER_DAY, US_PER_MS, US_PER_SECOND, UTC, day_start_us, utc_today
from openrouter_emulator.usage_day import UsageDay

TICK_S = 0.1
LOOKBACK_US = 3600 * US_PER_SECOND  # requests that started this long before the pusher may still complete
LIVE_ID_LIMIT = 100_000  # ids kept per list of the live counters (counts stay exact)
REORDER_FLUSH_S = 1.0  # a partly filled reorder window is released after this long


class LiveBroadcast:
    """The live pusher's task and state; `start` in the server's loop, `stop` before it ends."""

    def __init__(self, dataset: UsageDataset, url: str, headers: Mapping[str, str], settings: BroadcastSettings,
                 in_pool: InPool) -> None:
        self._dataset = dataset
        self._in_pool = in_pool
        self.pusher = Pusher(url, headers, settings, id_limit=LIVE_ID_LIMIT)
        self.started_at = time.time()
        self._date = utc_today(self.started_at)
        self._cursor_us = 0  # rows created up to here (µs) have been scheduled
        self._due: list[tuple[float, str]] = []  # (push at, generation id), a heap
        self._snapshots: dict[dt.date, UsageDay] = {}  # the snapshot of each day last looked at for late rows
        self._late_seen: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pusher.close()
        counts = self.pusher.counts
        print(f"broadcast live stopped: {counts.generations} generations, {counts.totals['delivered']} delivered, "
              f"{counts.totals['dropped']} dropped, {counts.connection_errors} connection errors", flush=True)

    def snapshot(self) -> dict[str, Any]:
        started = dt.datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="milliseconds")
        return {"live": True, **self.pusher.describe(), "started_at": started, "scheduled": len(self._due),
                **self.pusher.counts.snapshot()}

    async def _run(self) -> None:
        pusher = self.pusher
        await pusher.start()
        described = pusher.describe()
        print(f"broadcast live: pushing today's generations to {described['url']} "
              f"(headers: {', '.join(described['headers']) or 'none'})", flush=True)
        today = utc_today(time.time())
        await self._in_pool(functools.partial(self._dataset.day, today, time.time()))  # numpy: seconds when dense
        self.started_at = time.time()
        await pusher.send_connection_test()
        print(f"broadcast live: connection test {pusher.counts.connection_test}", flush=True)
        self._cursor_us = int(self.started_at * US_PER_SECOND) - LOOKBACK_US
        start_date = dt.datetime.fromtimestamp(self._cursor_us / US_PER_SECOND, UTC).date()
        if self._dataset.covers(start_date, self.started_at):
            self._date = start_date
        else:
            self._date = utc_today(self.started_at)
            self._cursor_us = day_start_us(self._date) - 1
        while True:
            try:
                now = time.time()
                await self._schedule(now)
                while self._due and self._due[0][0] <= now:
                    _, gen_id = heapq.heappop(self._due)
                    await pusher.offer(gen_id, self._builder(gen_id))
                pusher.flush(REORDER_FLUSH_S)
            except Exception:  # noqa: BLE001 - keep pushing; the traceback says what went wrong
                traceback.print_exc(file=sys.stderr)
            await asyncio.sleep(TICK_S)

    async def _schedule(self, now: float) -> None:
        """Schedule the rows created since the last tick, day by day up to today, and today's late rows."""
        now_us = int(now * US_PER_SECOND)
        today = utc_today(now)
        while True:
            day = self._dataset.built_day(self._date)
            if day is None and self._dataset.covers(self._date, now):
                day = await self._in_pool(functools.partial(self._dataset.day, self._date, now))
            if day is not None:
                end_us = min(now_us, day_start_us(self._date) + US_PER_DAY - 1)
                self._schedule_rows(day, end_us)
                self._cursor_us = end_us
                if self._date == today:
                    self._schedule_late(day)
            if self._date >= today:
                return
            self._date += dt.timedelta(days=1)
            self._cursor_us = day_start_us(self._date) - 1

    def _schedule_rows(self, day: UsageDay, end_us: int) -> None:
        c = day.columns
        lo = int(np.searchsorted(c.created_us, self._cursor_us, side="right"))
        hi = int(np.searchsorted(c.created_us, end_us, side="right"))
        rows = lo + np.flatnonzero((c.flags[lo:hi] & LATE) == 0)
        done_s = self._done_s(day, rows)
        keep = done_s >= self.started_at
        for gen_id, at in zip(day.generation_ids(rows[keep]), done_s[keep].tolist(), strict=True):
            heapq.heappush(self._due, (at, gen_id))

    def _schedule_late(self, day: UsageDay) -> None:
        """Rows added to today since the last look: pushed once both completed and visible."""
        if self._snapshots.get(day.date) is day:
            return
        self._snapshots[day.date] = day
        c = day.columns
        rows = np.flatnonzero(c.flags & LATE)
        at_s = np.maximum(self._done_s(day, rows), c.visible_at[rows])
        for gen_id, at in zip(day.generation_ids(rows), at_s.tolist(), strict=True):
            if gen_id not in self._late_seen:
                self._late_seen.add(gen_id)
                if at >= self.started_at:
                    heapq.heappush(self._due, (at, gen_id))

    @staticmethod
    def _done_s(day: UsageDay, rows: np.ndarray) -> np.ndarray:
        c = day.columns
        done_ms = c.created_us[rows] // US_PER_MS + np.round(c.generation_ms[rows]).astype(np.int64)
        return np.asarray(done_ms / 1000.0, dtype=np.float64)

    def _builder(self, gen_id: str) -> Any:
        def build(error: bool, mismatch: bool, string_ints: bool) -> dict[str, Any]:
            found = self._dataset.find(gen_id, time.time())
            if found is None:
                raise LookupError(f"generation {gen_id} vanished before its delivery was built")
            return delivery(*found, error=error, mismatch=mismatch, string_ints=string_ints)
        return build


def live_settings(args: argparse.Namespace, seed: int) -> tuple[str, dict[str, str], BroadcastSettings] | None:
    """(url, headers with the token, settings) of `--broadcast-*` flags, or None without `--broadcast-url`;
    ValueError naming the flag when they do not fit together."""
    url = getattr(args, "broadcast_url", None)
    lines = getattr(args, "broadcast_headers", None) or []
    if url is None:
        if lines:
            raise ValueError("--broadcast-header needs --broadcast-url")
        return None
    check_url(url, "--broadcast-url")
    headers = with_token(dict(lines), os.environ.get(TOKEN_ENV) or None)
    values = {name: getattr(args, f"broadcast_{name}") for name in SETTING_NAMES
              if getattr(args, f"broadcast_{name}", None) is not None}
    return url, headers, check_settings(values, seed=seed)
