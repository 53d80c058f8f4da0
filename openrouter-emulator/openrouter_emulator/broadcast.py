"""The Broadcast pusher: POSTs deliveries (`broadcast_spans`) to a webhook, as unreliably as Broadcast may.

OpenRouter promises no retries, no order and no completeness, so the pusher drops, duplicates, delays,
reorders, gzips, spells `intValue` as strings, swaps in error spans and mismatched costs at its settings
(`broadcast_settings`), and counts exactly what it did, so a test can hold a receiver to it. Every draw comes
from (seed, generation id), so the same ids misbehave the same way in every run. It never logs or answers a
header value (the token). `replay_day` pushes one day on demand; `broadcast_live` pushes today as it happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import json
import random
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from openrouter_emulator.broadcast_settings import BroadcastSettings, shown_url
from openrouter_emulator.broadcast_spans import connection_test, delivery
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.isotime import US_PER_MS
from openrouter_emulator.usage_day import UsageDay

# (error span, mismatched cost, string ints) -> the delivery of one generation.
Build = Callable[[bool, bool, bool], dict[str, Any]]
InPool = Callable[[Callable[[], Any]], Awaitable[Any]]
# Each count of generations, and the name of its id list in the answers.
_ID_LISTS = {"sent": "sent_ids", "delivered": "delivered_ids", "failed": "failed_ids", "dropped": "dropped_ids",
             "duplicated": "duplicated_ids", "error_spans": "error_span_ids", "mismatched": "mismatched_ids",
             "gzipped": "gzipped_ids", "string_ints": "string_int_ids"}
_MIN_PENDING = 10_000  # deliveries offered and not yet finished before `offer` waits (bounds memory)


def draw(seed: int, what: str, gen_id: str) -> float:
    """A uniform [0, 1) number from (seed, what, id) alone."""
    digest = hashlib.blake2b(f"{seed}:{what}:{gen_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Counts:
    """What a pusher did. Counts are exact; the id lists keep at most `id_limit` ids each (None: all)."""

    def __init__(self, id_limit: int | None = None) -> None:
        self.id_limit = id_limit
        self.ids: dict[str, list[str]] = {name: [] for name in _ID_LISTS}
        self.totals: dict[str, int] = dict.fromkeys(_ID_LISTS, 0)
        self.generations = self.posts = self.connection_errors = 0
        self.by_status: dict[str, int] = {}
        self.last_connection_error: str | None = None
        self.connection_test: dict[str, Any] | None = None

    def add(self, name: str, gen_id: str) -> None:
        self.totals[name] += 1
        if self.id_limit is None or len(self.ids[name]) < self.id_limit:
            self.ids[name].append(gen_id)

    def answered(self, status: int) -> None:
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1

    def unanswered(self, error: BaseException) -> None:
        self.connection_errors += 1
        self.last_connection_error = f"{type(error).__name__}: {error}"[:300]

    def snapshot(self) -> dict[str, Any]:
        truncated = any(len(self.ids[n]) < self.totals[n] for n in _ID_LISTS)
        finished = self.totals["delivered"] + self.totals["failed"] + self.totals["dropped"]
        return {"generations": self.generations, **self.totals, "pending": self.generations - finished,
                "posts": self.posts, "by_status": dict(sorted(self.by_status.items())),
                "connection_errors": self.connection_errors,
                "last_connection_error": self.last_connection_error, "connection_test": self.connection_test,
                **{key: list(self.ids[n]) for n, key in _ID_LISTS.items()}, "ids_truncated": truncated}


@dataclass(slots=True)
class _Delivery:
    gen_id: str
    build: Build
    error: bool
    mismatch: bool
    string_ints: bool
    gzip: bool
    posts_left: int  # 2 for a duplicate
    delay_s: float
    again_s: float
    body: bytes | None = None
    ok: bool = False
    posted: int = 0


class Pusher:
    """POSTs to one URL with static headers, `concurrency` at a time; `offer`, then `drain`, then `close`."""

    def __init__(self, url: str, headers: Mapping[str, str], settings: BroadcastSettings,
                 id_limit: int | None = None) -> None:
        self.url = url
        self._headers = dict(headers)
        self.settings = settings
        self.counts = Counts(id_limit)
        self._shuffle = random.Random(settings.seed)
        self._window: list[_Delivery] = []
        self._window_since = 0.0
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._pending = 0
        self._cap = max(_MIN_PENDING, 2 * settings.reorder_window)
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    def describe(self) -> dict[str, Any]:
        """Where and how it pushes, with header names only."""
        return {"url": shown_url(self.url), "headers": sorted(self._headers), "settings": self.settings.public()}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                              timeout=aiohttp.ClientTimeout(total=self.settings.post_timeout_s))
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.settings.concurrency)]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def send_connection_test(self) -> None:
        """The connection test (`X-Test-Connection: true`), recorded in `counts.connection_test`."""
        body = json.dumps(connection_test(int(time.time() * 1000))).encode()
        status, error = await self._post(body, {"X-Test-Connection": "true"})
        self.counts.connection_test = {"status": status} if error is None else {"error": error}

    async def offer(self, gen_id: str, build: Build) -> None:
        """One generation to deliver (or drop), at the settings' odds; waits while too many are pending."""
        while self._pending >= self._cap:
            self._room.clear()
            await self._room.wait()
        s, seed = self.settings, self.settings.seed
        self.counts.generations += 1
        if draw(seed, "drop", gen_id) < s.drop_share:
            self.counts.add("dropped", gen_id)
            return
        error = draw(seed, "error", gen_id) < s.error_span_share
        item = _Delivery(gen_id, build, error=error,
                         mismatch=not error and draw(seed, "mismatch", gen_id) < s.mismatch_share,
                         string_ints=draw(seed, "string-ints", gen_id) < s.string_ints_share,
                         gzip=draw(seed, "gzip", gen_id) < s.gzip_share,
                         posts_left=2 if draw(seed, "duplicate", gen_id) < s.duplicate_share else 1,
                         delay_s=draw(seed, "delay", gen_id) * s.delay_ms / 1000,
                         again_s=draw(seed, "again", gen_id) * s.delay_ms / 1000)
        self._pending += 1
        self._idle.clear()
        if s.reorder_window <= 1:
            self._release(item)
            return
        if not self._window:
            self._window_since = time.monotonic()
        self._window.append(item)
        if len(self._window) >= s.reorder_window:
            self.flush()

    def flush(self, older_than_s: float = 0.0) -> None:
        """Release a partly filled reorder window (at once, or once it has waited `older_than_s`)."""
        if self._window and time.monotonic() - self._window_since >= older_than_s:
            window, self._window = self._window, []
            self._shuffle.shuffle(window)
            for item in window:
                self._release(item)

    async def drain(self) -> None:
        """Until everything offered has been delivered, failed or dropped (duplicates included)."""
        self.flush()
        await self._idle.wait()

    def _release(self, item: _Delivery, delay_s: float | None = None) -> None:
        delay = item.delay_s if delay_s is None else delay_s
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._queue.put_nowait, item)
        else:
            self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._deliver(item)
            except Exception:  # noqa: BLE001 - a bug building one body must not stop the pusher
                traceback.print_exc(file=sys.stderr)
                item.posts_left = 1  # finished below, as failed unless an earlier POST was answered 2xx
            item.posts_left -= 1
            if item.posts_left > 0:
                self._release(item, item.again_s)
            else:
                self._finish(item)

    async def _deliver(self, item: _Delivery) -> None:
        counts = self.counts
        if item.body is None:
            data = json.dumps(item.build(item.error, item.mismatch, item.string_ints), separators=(",", ":")).encode()
            item.body = gzip.compress(data, compresslevel=5) if item.gzip else data
        item.posted += 1
        if item.posted == 1:
            counts.add("sent", item.gen_id)
            for name, flag in (("error_spans", item.error), ("mismatched", item.mismatch), ("gzipped", item.gzip),
                               ("string_ints", item.string_ints)):
                if flag:
                    counts.add(name, item.gen_id)
        else:
            counts.add("duplicated", item.gen_id)
        status, _ = await self._post(item.body, {"Content-Encoding": "gzip"} if item.gzip else {})
        item.ok = item.ok or (status is not None and 200 <= status < 300)

    async def _post(self, body: bytes, extra: Mapping[str, str]) -> tuple[int | None, str | None]:
        """(status, None), or (None, why) when no HTTP answer came; counted either way."""
        assert self._session is not None, "start() first"
        self.counts.posts += 1
        headers = {**self._headers, "Content-Type": "application/json", **extra}
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self.counts.unanswered(error)
            return None, self.counts.last_connection_error
        self.counts.answered(response.status)
        return response.status, None

    def _finish(self, item: _Delivery) -> None:
        self.counts.add("delivered" if item.ok else "failed", item.gen_id)
        item.body = None
        self._pending -= 1
        if self._pending < self._cap:
            self._room.set()
        if self._pending == 0:
            self._idle.set()


def day_builder(day: UsageDay, row: int) -> Build:
    return lambda error, mismatch, string_ints: delivery(day, row, error=error, mismatch=mismatch,
                                                         string_ints=string_ints)


def completion_order(day: UsageDay, rows: np.ndarray) -> np.ndarray:
    """The rows in the order their requests completed (created_at + generation_time), as Broadcast sends."""
    c = day.columns
    done = c.created_us[rows] // US_PER_MS + np.round(c.generation_ms[rows]).astype(np.int64)
    return rows[np.argsort(done, kind="stable")]


async def replay_day(dataset: UsageDataset, date: dt.date, now: float, url: str, headers: Mapping[str, str],
                     settings: BroadcastSettings, in_pool: InPool, *, limit: int | None = None,
                     send_connection_test: bool = False) -> dict[str, Any]:
    """Push every visible generation of the day (its first `limit` by created time) in completion order, as
    fast as the concurrency allows; the counts once all are delivered, failed or dropped."""
    day = await in_pool(lambda: dataset.day(date, now))
    rows = np.zeros(0, dtype=np.int64) if day is None else np.flatnonzero(day.visible(now))[:limit]
    pusher = Pusher(url, headers, settings)
    started = time.monotonic()
    await pusher.start()
    try:
        if send_connection_test:
            await pusher.send_connection_test()
        if day is not None:
            for row in completion_order(day, rows).tolist():
                await pusher.offer(day.generation_id(row), day_builder(day, row))
        await pusher.drain()
    finally:
        await pusher.close()
    counts = pusher.counts.snapshot()
    elapsed = time.monotonic() - started
    print(f"broadcast replay of {date} to {shown_url(url)} (headers: {', '.join(sorted(headers)) or 'none'}): "
          f"{counts['generations']} generations, {counts['delivered']} delivered, {counts['dropped']} dropped, "
          f"{counts['failed']} failed, {counts['connection_errors']} connection errors in {elapsed:.2f}s", flush=True)
    return {"day": date.isoformat(), **pusher.describe(), "elapsed_s": round(elapsed, 3), **counts}
