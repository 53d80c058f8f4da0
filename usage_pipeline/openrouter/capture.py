"""Capture every generation of one UTC day, at the pace the server allows, as a stream of batches.

Three stages overlap: a worker thread lists the next window's ids (`DayEnumeration`) while this window's
records are fetched, hundreds in flight (`RecordFetcher`, paced by one shared `AdaptiveLimit`), while the
caller writes the previous window. No head-of-line blocking: a slow or hung record holds only its own
window's hand-over, never the fetches behind it; at most `OPEN_WINDOWS` windows are open at once, so
memory is bounded by them, never by the day. A window is handed over whole, because the ledger ranks
generations that share a microsecond within one batch.

Nothing is dropped silently: ids whose record stays 404 or keeps failing are listed in `report.missing`,
records that cannot be parsed in `report.invalid`, and a window still truncated at millisecond width raises.
"""

from __future__ import annotations

import array
import asyncio
import datetime as dt
import itertools
import queue
import random
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

from usage_pipeline.openrouter.adaptive_limit import AdaptiveLimit
from usage_pipeline.openrouter.client import ANALYTICS_MAX_ROWS, OpenRouterClient
from usage_pipeline.openrouter.day import EDGE, check_capturable, day_bounds
from usage_pipeline.openrouter.enumeration import DayEnumeration, IdWindow
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration
from usage_pipeline.openrouter.records import Answer, Kind, RecordFetcher, RecordRetries
from usage_pipeline.openrouter.transport import OpenRouterAuthError, OpenRouterError
from usage_pipeline.openrouter.windows import Bucket, WindowTooDense

__all__ = ["CaptureReport", "DayCapture", "WindowTooDense"]

OPEN_WINDOWS = 4  # windows being fetched or waiting to be written; ~10,000 records each at most
HEDGE_AFTER_ROUND_TRIPS = 5.0  # an answer this many smoothed round trips late is raced by a second request
HEDGE_AFTER_MIN_S = 1.0


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
    records_fetched: int = 0
    duplicate_ids_across_windows: int = 0
    next_day_ids_skipped: int = 0  # answered by a server whose time_range.end is inclusive
    missing: list[str] = field(default_factory=list)
    missing_reasons: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    retries: int = 0
    throttled: int = 0  # 429s met by record fetches
    hedged: int = 0  # slow record requests raced by a second one
    fetch_requests: int = 0
    peak_in_flight: int = 0
    final_limit: float = 0.0
    fetch_p50_ms: float = 0.0
    fetch_p99_ms: float = 0.0
    fetch_seconds: float = 0.0  # from the first record request to the last answer
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return (not self.missing and not self.invalid
                and self.records_fetched + self.next_day_ids_skipped == self.ids_enumerated)

    @property
    def records_per_second(self) -> float:
        return self.records_fetched / self.fetch_seconds if self.fetch_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class DayCapture:
    """Iterate `batches()` for the day's generations; read `report` afterwards."""

    def __init__(self, client: OpenRouterClient, day: dt.date, *, now: dt.datetime | None = None,
                 retries: RecordRetries | None = None) -> None:
        check_capturable(day, now)
        self.client = client
        self.day = day
        self.report = CaptureReport(day=day.isoformat())
        self.enumeration = DayEnumeration(client, day, self.report)
        self.retries = retries or RecordRetries(not_found=client.not_found_retries)
        self._start, self._end = day_bounds(day)

    def count_buckets(self) -> list[Bucket]:
        return self.enumeration.count_buckets()

    # -- the caller's side: a thread runs the pipeline, batches come back through a queue --

    def batches(self) -> Generator[list[Generation], None, None]:
        started = time.monotonic()
        queries_before, retries_before = self.client.analytics_queries, self.client.retries
        handed: queue.Queue[Any] = queue.Queue()
        runner = _Pipeline(self, handed.put)
        thread = threading.Thread(target=runner.run, name=f"capture-{self.day}", daemon=True)
        thread.start()
        try:
            while True:
                item = handed.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                batch, written = item
                yield batch
                written()
        finally:
            runner.stop()
            thread.join()
            self.report.analytics_queries = self.client.analytics_queries - queries_before
            self.report.retries += self.client.retries - retries_before
            self.report.elapsed_s = round(time.monotonic() - started, 3)

    def accept(self, job: _Job, data: dict[str, Any]) -> Generation | None:
        """The record, or None after noting why it is not one of this day's."""
        assert job.window is not None
        try:
            record = Generation.from_api(data, api_key_id=job.window.ids[job.gen_id])
        except InvalidGeneration as exc:
            self.report.invalid.append(str(exc))
            return None
        if record.id == job.gen_id and self._end <= record.created_at < self._end + EDGE:
            self.report.next_day_ids_skipped += 1  # the next day's, answered at an inclusive edge
            return None
        if record.id != job.gen_id or not self._start <= record.created_at < self._end:
            self.report.invalid.append(f"generation {job.gen_id}: record id {record.id!r} created_at "
                                       f"{record.created_at.isoformat()} does not belong to {self.day}")
            return None
        return record

    def missing(self, job: _Job, reason: str) -> None:
        self.report.missing.append(job.gen_id)
        self.report.missing_reasons[reason] = self.report.missing_reasons.get(reason, 0) + 1


class _Pipeline:
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
                except asyncio.TimeoutError:
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
            record = self.capture.accept(job, answer.data)
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
            self.capture.missing(job, answer.reason)
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
