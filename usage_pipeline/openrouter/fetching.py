"""The asyncio side of a day's capture, on its own thread: enumerate ahead, fetch many in flight, hand
windows over whole.

The enumeration (`DayEnumeration`, synchronous, paced at 64 queries a minute) runs in a worker thread a
window or more ahead; each window's ids become jobs in one priority queue (older windows first: they hold
memory); one dispatcher starts a job whenever the shared `AdaptiveLimit` allows, and every answer settles
its job: a record, a retry later, or a miss with its reason. A window is handed to the caller when its
last job settles; at most `OPEN_WINDOWS` are open (being fetched or waiting to be written).
"""

from __future__ import annotations

import array
import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usage_pipeline.openrouter.adaptive_limit import AdaptiveLimit
from usage_pipeline.openrouter.enumeration import IdWindow
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.records import Answer, Kind, RecordFetcher
from usage_pipeline.openrouter.transport import OpenRouterAuthError, OpenRouterError

if TYPE_CHECKING:
    from usage_pipeline.openrouter.capture import DayCapture

OPEN_WINDOWS = 4  # windows being fetched or waiting to be written; ~10,000 records each at most
HEDGE_AFTER_ROUND_TRIPS = 5.0  # an answer this many smoothed round trips late is raced by a second request
HEDGE_AFTER_MIN_S = 1.0


@dataclass
class _Window:
    ids: dict[str, Any]
    waiting: int
    records: list[Generation] = field(default_factory=list)


@dataclass(order=True)
class _Job:
    window_no: int  # older windows first: they are the ones holding memory
    seq: int
    gen_id: str = field(compare=False)
    window: _Window | None = field(compare=False)
    not_found: int = field(default=0, compare=False)
    transient: int = field(default=0, compare=False)
    throttled: int = field(default=0, compare=False)


_END = _Job(window_no=2**62, seq=0, gen_id="", window=None)


def _percentile(samples: array.array, share: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class DayFetch:
    """The asyncio side, on its own thread: enumerate ahead, fetch many in flight, hand windows over."""

    def __init__(self, capture: DayCapture, hand_over: Callable[[Any], None]) -> None:
        self.capture = capture
        self.report = capture.report
        self.hand_over = hand_over
        settings = capture.client.settings
        self.limit = AdaptiveLimit(ceiling=settings.max_concurrency, max_rps=settings.max_rps)
        self.rng = random.Random(f"{capture.day}")
        self.seq = itertools.count()
        self.latencies = array.array("d")
        self.fetch_started: float | None = None
        self.last_answer = 0.0
        self.last_clean = time.monotonic()
        self.failing = 0  # answers since the last clean one
        self.failure: BaseException | None = None
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
            self.last_clean = time.monotonic()
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
        """Enumerate windows in a worker thread, one ahead of the fetches, while there is room."""
        enumeration = self.capture.enumeration
        buckets = await asyncio.to_thread(enumeration.count_buckets)
        self.report.expected_from_counts = sum(b.count for b in buckets)
        windows = enumeration.windows(buckets)
        while True:
            await self.room.acquire()
            found: IdWindow | None = await asyncio.to_thread(next, windows, None)
            if found is None:
                self.room.release()
                break
            _, ids = found
            self.report.ids_enumerated += len(ids)
            window = _Window(ids=ids, waiting=len(ids))
            self.open_windows += 1
            window_no = next(self.seq)
            for gen_id in ids:
                self.work.put_nowait(_Job(window_no, next(self.seq), gen_id, window))
            if not ids:
                self._close(window)
        self.enumerated_all = True
        if self.open_windows == 0:
            self.work.put_nowait(_END)

    async def _dispatch(self, feeder: asyncio.Task[None]) -> None:
        while True:
            job = await self._next_job(feeder)
            if job is _END:
                return
            while (wait := self.limit.wait_time(time.monotonic())) > 0:
                self.slot_freed.clear()
                try:
                    await asyncio.wait_for(self.slot_freed.wait(), None if wait == float("inf") else wait)
                except TimeoutError:
                    pass
            if self.fetch_started is None:
                self.fetch_started = time.monotonic()
            self.limit.started(time.monotonic())
            self.report.fetch_requests += 1
            task = asyncio.create_task(self._attempt(job))
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

    async def _attempt(self, job: _Job) -> None:
        started = time.monotonic()
        answer = await self._hedged_fetch(job.gen_id)
        now = time.monotonic()
        self.latencies.append(now - started)
        self.last_answer = now
        self.limit.finished(answer.signal, now, latency_s=now - started, reset_at=answer.reset_at,
                            retry_at=answer.retry_at, budget=answer.budget)
        self.slot_freed.set()
        try:
            self._settle(job, answer)
        except Exception as exc:  # noqa: BLE001 - ends the day; the caller's thread raises it
            self._fail(exc)

    async def _hedged_fetch(self, gen_id: str) -> Answer:
        """One answer for the id. A request still unanswered after several round trips is probably hung
        (OpenRouter's sometimes are): a second request races it and the first answer wins ("The Tail at
        Scale"), so a hung record costs about a second, not a whole timeout."""
        first = asyncio.ensure_future(self.fetcher.fetch(gen_id))
        hedge_after = max(HEDGE_AFTER_MIN_S, HEDGE_AFTER_ROUND_TRIPS * self.limit.round_trip_s)
        done, _ = await asyncio.wait({first}, timeout=hedge_after)
        if done:
            return first.result()
        self.report.hedged += 1
        second = asyncio.ensure_future(self.fetcher.fetch(gen_id))
        try:
            done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for racer in (first, second):
                if not racer.done():
                    racer.cancel()
        return (first if first in done else second).result()

    def _breaker(self, answer: Answer, now: float) -> None:
        """Every answer failing for `give_up_after_s` means the server is down or broken, not one record:
        stop the day now rather than pay each record's whole backoff."""
        if answer.kind in (Kind.TRANSIENT, Kind.THROTTLED):
            self.failing += 1
            give_up = self.capture.client.settings.give_up_after_s
            if self.failing >= 3 and now - self.last_clean > give_up:
                raise OpenRouterError(
                    f"GET /generation: no request has succeeded for {now - self.last_clean:.0f} s "
                    f"({self.failing} failed in a row; the last: {answer.reason}); stopped after "
                    f"OPENROUTER_GIVE_UP_AFTER_S={give_up:g}, the day is incomplete")
        else:
            self.failing, self.last_clean = 0, now

    def _settle(self, job: _Job, answer: Answer) -> None:
        self._breaker(answer, time.monotonic())
        policy = self.capture.retries
        if answer.kind is Kind.RECORD:
            assert answer.data is not None and job.window is not None
            record = self.capture.accept(job.gen_id, job.window.ids[job.gen_id], answer.data)
            if record is not None:
                job.window.records.append(record)
            self._resolved(job)
        elif answer.kind is Kind.AUTH:
            raise OpenRouterAuthError(_auth_message(answer), answer.status)
        elif answer.kind is Kind.THROTTLED and job.throttled < policy.throttled:
            job.throttled += 1
            self.report.throttled += 1
            self.work.put_nowait(job)  # it waits at the shared pause, not in its own backoff
        elif answer.kind is Kind.NOT_FOUND and job.not_found < policy.not_found:
            self._retry(job, policy.not_found_delay(job.not_found))
            job.not_found += 1
        elif answer.kind is Kind.TRANSIENT and job.transient < policy.transient:
            self._retry(job, policy.transient_delay(job.transient, answer.retry_after_s, self.rng))
            job.transient += 1
        else:
            if answer.kind is Kind.THROTTLED:
                self.report.throttled += 1
            self.capture.missing(job.gen_id, answer.reason)
            self._resolved(job)

    def _retry(self, job: _Job, delay: float) -> None:
        self.report.retries += 1
        asyncio.get_running_loop().call_later(delay, self.work.put_nowait, job)

    def _resolved(self, job: _Job) -> None:
        window = job.window
        assert window is not None
        window.waiting -= 1
        if window.waiting == 0:
            self._close(window)

    def _close(self, window: _Window) -> None:
        """Hand a whole window to the caller; its room frees once the caller has written it."""
        self.report.records_fetched += len(window.records)
        loop = asyncio.get_running_loop()

        def written() -> None:
            try:
                loop.call_soon_threadsafe(self._written)
            except RuntimeError:  # the loop is closed: the run already ended with a failure the caller sees
                pass

        if window.records:
            self.hand_over((window.records, written))
        else:
            self._written()

    def _written(self) -> None:
        self.open_windows -= 1
        self.room.release()
        if self.enumerated_all and self.open_windows == 0:
            self.work.put_nowait(_END)

    def _summarize(self) -> None:
        self.report.peak_in_flight = self.limit.peak_in_flight
        self.report.final_limit = round(self.limit.limit, 1)
        self.report.fetch_p50_ms = round(_percentile(self.latencies, 0.50) * 1000, 1)
        self.report.fetch_p99_ms = round(_percentile(self.latencies, 0.99) * 1000, 1)
        if self.fetch_started is not None:
            self.report.fetch_seconds = round(self.last_answer - self.fetch_started, 3)


def _auth_message(answer: Answer) -> str:
    hints = {401: "OpenRouter did not accept the key; set OPENROUTER_API_KEY to a valid management key",
             402: "the account behind the key is out of credit",
             403: "this endpoint needs a management key (OPENROUTER_API_KEY holds an inference key or one "
                  "without access)"}
    return f"GET /generation: {answer.reason}: {hints.get(answer.status or 0, '')}"
