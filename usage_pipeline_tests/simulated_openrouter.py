"""OpenRouter simulated in virtual time: `GET /generation` behind one of the emulator's account limiters, with a
latency distribution and a fault mix, on an event loop whose clock only moves when it is idle (looptime).

`RecordFetcher` and its `Pace` run on it unchanged, so a day of 20,000 records with 200 ms answers costs
seconds, not minutes, and the same seed gives the same day. No HTTP and no CPU contention: it isolates the
pacing (`test_pace.py`, `benchmarks/pace_simulation.py`); the emulator over real HTTP measures the rest.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

import looptime

from openrouter_emulator.limiters import make_limiter
from usage_pipeline.openrouter.fetch import RecordFetcher
from usage_pipeline.openrouter.records import Answer, Kind, read_answer
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import OpenRouterSource

EPOCH = 1_800_000_000.3  # virtual epoch seconds at the start (not on a window boundary)
WINDOWS = 3  # windows fetched at once, as the ledger does


@dataclass
class World:
    """One shape of the world: the limiter, the latency distribution and the fault mix."""

    limiter: str = "fixed"
    limit: float = 500.0
    latency_ms: float = 200.0
    sigma: float = 0.6
    tail: str = "lognormal"  # or "bimodal": 5% of answers take 10x the median
    lone_429: float = 0.01
    fault_503: float = 0.005
    first_404: float = 0.05
    hang: float = 0.0005
    hang_s: float = 20.0
    html_share: float = 0.1  # of the limiter's 429s, sent as a CDN's page (no rate-limit headers)
    seed: int = 1
    counts: dict[str, int] = field(default_factory=dict)


class SimulatedSource(OpenRouterSource):
    """An `OpenRouterSource` whose `generation()` is a simulated server, in the loop's virtual time."""

    def __init__(self, world: World) -> None:
        super().__init__(OpenRouterSettings(api_key="sk-or-v1-simulated", base_url="http://simulated/api/v1"))
        self.world = world
        self.rng = random.Random(world.seed)
        self.limiter = make_limiter(world.limiter, world.limit, 1.0)
        self.seen: set[str] = set()
        self.events: list[tuple[float, float, Answer]] = []  # every attempt: started, answered, answer

    def _count(self, what: str) -> None:
        self.world.counts[what] = self.world.counts.get(what, 0) + 1

    def _latency(self) -> float:
        w = self.world
        if w.tail == "bimodal" and self.rng.random() < 0.05:
            return 10 * w.latency_ms / 1000
        return w.latency_ms / 1000 * math.exp(w.sigma * self.rng.gauss(0.0, 1.0))

    async def generation(self, generation_id: str, timeout_s: float) -> Answer:
        started = asyncio.get_running_loop().time()
        answer = await self._answer_for(generation_id, timeout_s)
        self.events.append((started, asyncio.get_running_loop().time(), answer))
        return answer

    async def _answer_for(self, generation_id: str, timeout_s: float) -> Answer:
        w, rng, loop = self.world, self.rng, asyncio.get_running_loop()
        refusal = self.limiter.acquire(EPOCH + loop.time())
        if refusal is not None:
            self._count("limited")
            await asyncio.sleep(self._latency() / 10)
            if rng.random() < w.html_share:
                return self._answer(429, {"Content-Type": "text/html"}, b"<html>429</html>")
            return self._answer(429, {"X-RateLimit-Limit": str(refusal.budget), "X-RateLimit-Remaining": "0",
                                      "X-RateLimit-Reset": str(refusal.reset_epoch_ms)}, b'{"error": {}}')
        self._count("accepted")
        if rng.random() < w.lone_429:
            await asyncio.sleep(self._latency() / 10)
            return self._answer(429, {"Retry-After": "1"}, b'{"error": {"message": "Rate limit exceeded"}}')
        delay = w.hang_s if rng.random() < w.hang else self._latency()
        if delay > timeout_s:
            await asyncio.sleep(timeout_s)
            return Answer(Kind.TRANSIENT, reason=f"no answer within {timeout_s:.2g} s")
        await asyncio.sleep(delay)
        if rng.random() < w.fault_503:
            return self._answer(503, {"Retry-After": "1"}, b'{"error": {"message": "Service unavailable"}}')
        first = generation_id not in self.seen
        self.seen.add(generation_id)
        if first and rng.random() < w.first_404:
            return self._answer(404, {}, b'{"error": {"message": "not found"}}')
        self._count("records")
        body = {"data": {"id": generation_id, "created_at": "2026-12-06T12:00:00Z", "model": "m/x"}}
        return self._answer(200, {}, json.dumps(body).encode())

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> Answer:
        return read_answer(status, headers, body, EPOCH + asyncio.get_running_loop().time())


async def _fetch(world: World, records: int, source: SimulatedSource | None = None) -> dict[str, Any]:
    source = source or SimulatedSource(world)
    fetcher = RecordFetcher(source, seed=str(world.seed))
    ids = [f"gen-{n:08d}" for n in range(records)]
    share = math.ceil(records / WINDOWS)
    results = await asyncio.gather(*(fetcher.fetch_records(dict.fromkeys(ids[k:k + share]))
                                     for k in range(0, records, share)))
    figures, pace = fetcher.figures, source.pace
    assert figures.first_request_at is not None
    seconds = figures.last_answer_at - figures.first_request_at
    fetched = sum(len(r.records) for r in results)
    return {"records": fetched, "missing": sum(len(r.missing) for r in results), "seconds": round(seconds, 2),
            "share": fetched / seconds / world.limit if world.limit else 0.0, "requests": figures.requests,
            "accepted": world.counts.get("accepted", 0), "limited": world.counts.get("limited", 0),
            "decreases": pace.figures.decreases, "pauses": pace.figures.account_pauses, "limit_rps": pace.limit_rps}



def simulate(world: World, records: int) -> dict[str, Any]:
    """Fetch `records` ids from `world` in virtual time: records, misses, virtual seconds, share of the limit."""
    loop = looptime.new_event_loop(start=0.0, resolution=1e-9)
    try:
        return loop.run_until_complete(_fetch(world, records))
    finally:
        loop.close()
