"""Fetch a set of generation ids (a day's window, or the push drain's): each record once, hundreds in flight.
An id's task holds a concurrency slot only while its request is in flight, so a record in 404 back-off delays
no other. The breaker ends the run once every answer has failed for `give_up_after_s`, a refused key at once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.openrouter.errors import OpenRouterError, http_error
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration
from usage_pipeline.openrouter.records import Answer, Kind, RecordRetries
from usage_pipeline.openrouter.source import OpenRouterSource

TASKS_PER_SLOT = 2  # ids with a task at once, per concurrency slot: in flight, or in back-off


@dataclass
class Fetched:
    """What became of a set of ids: records, and every id that yielded none, with why."""

    records: list[Generation] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # id -> the last answer's reason
    invalid: dict[str, str] = field(default_factory=dict)  # id -> why its record cannot be stored


@dataclass
class FetchFigures:
    """Run-wide counters of the record fetches, for the metadata."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0  # attempts cut at the pace's attempt timeout (a hung request), then retried
    first_request_at: float | None = None
    last_answer_at: float = 0.0


class RecordFetcher:
    """The record side of one capture: the source, its retry policy, the breaker and the run's figures."""

    def __init__(self, source: OpenRouterSource, retries: RecordRetries | None = None, seed: str = "") -> None:
        self.source = source
        self.retries = retries or RecordRetries()
        self.figures = FetchFigures()
        self.rng = random.Random(seed)
        self.failing, self.last_clean = 0, 0.0  # the breaker's: answers failed in a row, and the last clean one
        self.tasks = asyncio.Semaphore(TASKS_PER_SLOT * source.settings.max_concurrency)
        self.dispatching = asyncio.Lock()

    async def fetch_records(self, ids: Mapping[str, Any],
                            on_record: Callable[[Generation], None] | None = None) -> Fetched:
        """Every id's record (`ids`: id -> its API key label, or None); `on_record` sees each as it arrives."""
        fetched = Fetched()
        try:
            async with asyncio.TaskGroup() as group:
                async with self.dispatching:  # sets go in the order asked: an earlier one finishes first
                    for gen_id, api_key in ids.items():
                        await self.tasks.acquire()
                        group.create_task(self._one(gen_id, api_key, fetched, on_record))
        except BaseExceptionGroup as failed:  # a refused key or the breaker: the first says why
            raise failed.exceptions[0] from None
        return fetched

    async def _one(self, gen_id: str, api_key: Any, fetched: Fetched,
                   on_record: Callable[[Generation], None] | None) -> None:
        try:
            answer = await self._attempts(gen_id)
        finally:
            self.tasks.release()
        if answer.kind is not Kind.RECORD:
            fetched.missing[gen_id] = answer.reason
            return
        assert answer.data is not None
        try:
            record = Generation.from_api(answer.data, api_key=api_key)
            if record.id != gen_id:
                raise InvalidGeneration(f"GET /generation?id={gen_id} answered the record of {record.id!r}")
        except InvalidGeneration as exc:
            fetched.invalid[gen_id] = str(exc)
            return
        fetched.records.append(record)
        if on_record is not None:
            on_record(record)

    async def _attempts(self, gen_id: str) -> Answer:
        """Attempts until a record, or until its budget for the kind of answer it keeps getting is spent."""
        loop = asyncio.get_running_loop()
        pace, figures = self.source.pace, self.figures
        tried: Counter[Kind] = Counter()
        while True:
            async with pace.request() as timeout_s:
                started = loop.time()
                if figures.first_request_at is None:
                    figures.first_request_at = self.last_clean = started
                figures.requests += 1
                answer = await self.source.generation(gen_id, timeout_s)
            now = figures.last_answer_at = loop.time()
            figures.timeouts += answer.reason.startswith("no answer within")
            pace.answered(answer, now - started)
            self._breaker(answer, now)
            if answer.kind is Kind.RECORD:
                return answer
            if answer.kind is Kind.AUTH:  # an OpenRouterAuthError: nothing will work
                raise http_error("GET /generation", answer.status or 401, answer.reason.split(" ", 1)[-1])
            delay = self.retries.delay(answer, tried[answer.kind], self.rng)
            tried[answer.kind] += 1
            if delay is None:
                return answer
            figures.retries += 1
            if delay > 0:
                await asyncio.sleep(delay)

    def _breaker(self, answer: Answer, now: float) -> None:
        """Every answer failing for `give_up_after_s` means the server is down or broken, not one record."""
        if answer.kind not in (Kind.TRANSIENT, Kind.THROTTLED):
            self.failing, self.last_clean = 0, now
            return
        self.failing += 1
        give_up_after_s = self.source.settings.give_up_after_s
        if self.failing >= 3 and now - self.last_clean > give_up_after_s:
            raise OpenRouterError(
                f"GET /generation: no request has succeeded for {now - self.last_clean:.0f} s ({self.failing} "
                f"failed in a row; the last: {answer.reason}); stopped after "
                f"OPENROUTER_GIVE_UP_AFTER_S={give_up_after_s:g}, the day is incomplete")
