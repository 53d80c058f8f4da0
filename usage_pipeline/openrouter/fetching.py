"""The asyncio side of a day's capture, on its own thread: enumerate ahead, fetch many in flight, stream
the records out as they arrive.

The enumeration (`DayEnumeration`, synchronous, paced at 64 queries a minute) runs in a worker thread a
window or more ahead; each window's ids, less those the ledger already holds whole (`StoredRecords`),
become jobs in one priority queue (older windows first: they hold memory); one dispatcher starts a job
whenever the shared `AdaptiveLimit` allows, and every answer settles its job: a record, a retry later, or
a miss with its reason. Records go to the caller in batches by size or age (`RecordOutbox`), so a record in
404 or 5xx back-off holds back nothing fetched beside it; at most `OPEN_WINDOWS` windows are open (ids
unsettled or records unwritten), so memory is bounded by them, never by the day. The day's last requests,
once they fit in what the account's budget window has left, go unpaced and as raced pairs (`_finishing`).
"""

from __future__ import annotations

import array
import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.openrouter import handover
from usage_pipeline.openrouter.adaptive_limit import AdaptiveLimit, Signal
from usage_pipeline.openrouter.attempts import (
    Breaker,
    TypicalLatency,
    auth_message,
    hedge_after,
    hedged_fetch,
    percentile,
)
from usage_pipeline.openrouter.capture_types import CaptureSide
from usage_pipeline.openrouter.enumeration import IdWindow
from usage_pipeline.openrouter.handover import Handover
from usage_pipeline.openrouter.outbox import OpenWindow
from usage_pipeline.openrouter.records import Answer, Kind, RecordFetcher
from usage_pipeline.openrouter.transport import OpenRouterAuthError
from usage_pipeline.openrouter.windows import Window

OPEN_WINDOWS = 4  # windows with ids unsettled or records unwritten; ~10,000 ids each at most
TWIN_SHARE = 0.02  # the day's last requests go as raced pairs, up to this share of the run's requests
BATCH_RECORDS = handover.BATCH_RECORDS  # read when a fetch starts: tests make batches small


@dataclass(order=True)
class _Job:
    window_no: int  # older windows first: they are the ones holding memory
    seq: int
    gen_id: str = field(compare=False)
    api_key: Any = field(compare=False)  # the key's label as analytics answered it
    window: OpenWindow | None = field(compare=False)
    not_found: int = field(default=0, compare=False)
    transient: int = field(default=0, compare=False)
    throttled: int = field(default=0, compare=False)


_END = _Job(window_no=2**62, seq=0, gen_id="", api_key=None, window=None)


class DayFetch:
    """The asyncio side, on its own thread: enumerate ahead, fetch many in flight, stream records over."""

    def __init__(self, capture: CaptureSide, hand_over: Callable[[Any], None]) -> None:
        self.capture = capture
        self.report = capture.report
        self.hand_over = hand_over
        settings = capture.client.settings
        self.limit = AdaptiveLimit(ceiling=settings.max_concurrency, max_rps=settings.max_rps)
        self.rng = random.Random(f"{capture.day}")
        self.seq = itertools.count()
        self.latencies = array.array("d")
        self.typical = TypicalLatency()
        self.fetch_started: float | None = None
        self.last_answer = 0.0
        self.breaker = Breaker(settings.give_up_after_s, time.monotonic())
        self.failure: BaseException | None = None
        self.handover = Handover(hand_over, self.report, self._window_closed,
                                 notify_closed=capture.stored is not None, batch_records=BATCH_RECORDS)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._run())
            self.hand_over(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            self.hand_over(self.failure or exc)

    def _fail(self, exc: BaseException) -> None:
        """A fetch task found a reason to stop the whole day (a refused key): end the run with it."""
        if self.failure is None:
            self.failure = exc
            if self._main is not None:
                self._main.cancel()

    def stop(self) -> None:
        """Called from the caller's thread when it stops reading (done, or failed while writing)."""
        self._stopped.set()
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            loop.call_soon_threadsafe(main.cancel)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        if self._stopped.is_set():
            return
        settings = self.capture.client.settings
        self.work: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self.room = asyncio.Semaphore(OPEN_WINDOWS)
        self.slot_freed = asyncio.Event()
        self.open_windows = 0
        self.enumerated_all = False
        self.tasks: set[asyncio.Task[None]] = set()
        fetcher = RecordFetcher(settings.base_url, settings.api_key, timeout_s=settings.record_timeout_s,
                                connections=settings.max_concurrency)
        async with fetcher:
            self.fetcher = fetcher
            self.breaker.last_clean = time.monotonic()
            feeder = asyncio.create_task(self._feed())
            try:
                await self._dispatch(feeder)
                await feeder  # re-raises an enumeration failure
            finally:
                for task in (feeder, *self.tasks):
                    task.cancel()
                await asyncio.gather(feeder, *self.tasks, return_exceptions=True)
                self._summarize()

    async def _feed(self) -> None:
        """Enumerate windows in a worker thread, ahead of the fetches, while there is room."""
        enumeration = self.capture.enumeration
        buckets = await asyncio.to_thread(enumeration.count_buckets)
        self.report.expected_from_counts = sum(b.count for b in buckets)
        windows = enumeration.windows(buckets)
        while True:
            await self.room.acquire()
            found = await asyncio.to_thread(self._next_window, windows)
            if found is None:
                self.room.release()
                break
            window, ids, skip = found
            self.report.ids_enumerated += len(ids)
            self.report.records_reused += len(skip)
            opened = OpenWindow(window, next(self.seq), unsettled=len(ids) - len(skip))
            self.open_windows += 1
            self.report.peak_open_windows = max(self.report.peak_open_windows, self.open_windows)
            for gen_id, api_key in ids.items():
                if gen_id not in skip:
                    self.work.put_nowait(_Job(opened.no, next(self.seq), gen_id, api_key, opened))
            if opened.done:
                self.handover.close(opened)
        self.enumerated_all = True
        if self.open_windows == 0:
            self.work.put_nowait(_END)

    def _next_window(self, windows: Iterator[IdWindow]) -> tuple[Window, dict[str, Any], set[str]] | None:
        """On the worker thread: the next window, its ids, and those the ledger holds whole already."""
        found = next(windows, None)
        if found is None:
            return None
        window, ids = found
        stored = self.capture.stored
        skip = {gen_id for gen_id in stored.window_opened(window, ids) if gen_id in ids} if stored else set()
        return window, ids, skip

    async def _dispatch(self, feeder: asyncio.Task[None]) -> None:
        while True:
            job = await self._next_job(feeder)
            if job is _END:
                return
            while (wait := self.limit.wait_time(time.monotonic(), unpaced=self._finishing())) > 0:
                self.slot_freed.clear()
                try:
                    await asyncio.wait_for(self.slot_freed.wait(), None if wait == float("inf") else wait)
                except TimeoutError:
                    pass
            if self.fetch_started is None:
                self.fetch_started = time.monotonic()
            twin = self._finishing(twins=True) and self.report.twinned < TWIN_SHARE * self.report.fetch_requests
            self.report.twinned += twin
            self.limit.started(time.monotonic())
            self.report.fetch_requests += 1
            task = asyncio.create_task(self._attempt(job, twin))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _next_job(self, feeder: asyncio.Task[None]) -> _Job:
        """The next job, or _END; an enumeration failure ends the dispatch at once."""
        if not self.work.empty():
            return self.work.get_nowait()
        getter = asyncio.ensure_future(self.work.get())
        await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        if feeder.exception() is not None:
            return _END  # the caller awaits the feeder, which raises
        return await self.work.get()

    async def _attempt(self, job: _Job, twin: bool) -> None:
        started = time.monotonic()
        answer, raced = await hedged_fetch(self.fetcher, job.gen_id, self._late_after,
                                           hedge_after(self.typical.seconds, tail=True), self._hedged, twin=twin,
                                           on_overruled=self._count_429)
        now = time.monotonic()
        self.latencies.append(now - started)
        self.last_answer = now
        if not raced and answer.signal is Signal.CLEAN and not self._in_tail():
            self.typical.add(now - started)
        self.limit.finished(answer.signal, now, latency_s=None if raced else now - started,
                            reset_at=answer.reset_at, retry_at=answer.retry_at, budget=answer.budget,
                            reset_stamp=answer.reset_stamp)
        self.slot_freed.set()
        try:
            self._settle(job, answer)
        except Exception as exc:  # noqa: BLE001 - ends the day; the caller's thread raises it
            self._fail(exc)

    def _finishing(self, *, twins: bool = False) -> bool:
        """Whether all still queued fits in the budget window's rest (then none waits for the pace), or with
        `twins` fits twice, so each may go as a raced pair: a lone 429 or 503 on one twin costs nothing, where
        alone it costs a Retry-After at the day's very end (the fault mix: median 90.0% -> 91.4% of the
        limit). Capped at TWIN_SHARE of the run's requests: a rerun of a few missing records pays few."""
        if not self.enumerated_all:
            return False
        left = self.limit.budget_left(time.monotonic())
        return left is not None and (2 * (self.work.qsize() + 1) <= left if twins else self.work.qsize() < left)

    def _in_tail(self) -> bool:
        return self.enumerated_all and self.work.empty()  # only stragglers and their retries are left

    def _late_after(self) -> float:
        return hedge_after(self.typical.seconds, tail=self._in_tail())

    def _hedged(self) -> None:
        self.report.hedged += 1
        self.limit.spent(time.monotonic())  # the second request spends the budget too

    def _count_429(self, answer: Answer) -> None:
        """Every 429 met is counted, also one a raced pair's other answer overruled."""
        if answer.kind is Kind.THROTTLED:
            self.report.throttled += 1
            self.report.throttled_lone += not answer.exhausted

    def _settle(self, job: _Job, answer: Answer) -> None:
        self.breaker.judge(answer, time.monotonic())
        self._count_429(answer)
        policy = self.capture.retries
        if answer.kind is Kind.RECORD:
            assert answer.data is not None and job.window is not None
            record = self.capture.accept(job.gen_id, job.api_key, answer.data)
            if record is not None:
                self.handover.record(record, job.window)
            self._resolved(job)
        elif answer.kind is Kind.AUTH:
            raise OpenRouterAuthError(auth_message(answer), answer.status)
        elif answer.kind is Kind.THROTTLED and job.throttled < policy.throttled:
            job.throttled += 1
            if answer.exhausted:
                self.work.put_nowait(job)  # the account's budget: it waits at the shared pause
            else:  # a lone 429: only this request waits, for its own Retry-After
                self._retry(job, policy.throttled_delay(job.throttled - 1, answer.retry_after_s, self.rng),
                            counted=False)
        elif answer.kind is Kind.NOT_FOUND and job.not_found < policy.not_found:
            self._retry(job, policy.not_found_delay(job.not_found, tail=self._in_tail()))
            job.not_found += 1
        elif answer.kind is Kind.TRANSIENT and job.transient < policy.transient:
            self._retry(job, policy.transient_delay(job.transient, answer.retry_after_s, self.rng))
            job.transient += 1
        else:
            self.capture.missing(job.gen_id, answer.reason)
            self._resolved(job)

    def _retry(self, job: _Job, delay: float, *, counted: bool = True) -> None:
        self.report.retries += counted
        asyncio.get_running_loop().call_later(delay, self.work.put_nowait, job)

    def _resolved(self, job: _Job) -> None:
        assert job.window is not None
        self.handover.settled(job.window)

    def _window_closed(self, window: OpenWindow) -> None:
        """Every id of the window is settled and every record written: its room frees for the next window."""
        self.open_windows -= 1
        self.room.release()
        if self.enumerated_all and self.open_windows == 0:
            self.work.put_nowait(_END)

    def _summarize(self) -> None:
        limit, report = self.limit, self.report
        report.peak_in_flight = limit.peak_in_flight
        report.final_limit = round(limit.limit, 1)
        report.learned_rps = round(limit.learned_rps or 0.0, 1)
        report.account_pauses = limit.account_pauses
        report.paused_s = round(limit.paused_s, 3)
        report.fetch_p50_ms = round(percentile(self.latencies, 0.50) * 1000, 1)
        report.fetch_p99_ms = round(percentile(self.latencies, 0.99) * 1000, 1)
        if self.fetch_started is not None:
            report.fetch_seconds = round(self.last_answer - self.fetch_started, 3)
