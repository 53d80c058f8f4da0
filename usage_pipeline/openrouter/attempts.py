"""One record attempt seen from above: raced when it hangs, judged by the breaker, explained when refused.

Kept apart from the dispatcher (`fetching`) because each is a policy of its own: the hedge bounds what a
hung request costs, the breaker bounds what a dead server costs, and the messages say what a refusal means.
"""

from __future__ import annotations

import array
import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from usage_pipeline.openrouter.records import Answer, Kind
from usage_pipeline.openrouter.transport import OpenRouterError

HEDGE_AFTER_TYPICAL = 6.0  # mid-day, an answer this many typical (median) latencies late is probably hung ...
HEDGE_AFTER_MIN_S = 1.0  # ... and at least this late: only then is it raced by a second request
TAIL_HEDGE_AFTER_TYPICAL = 3.0  # once nothing is left to fetch but stragglers: race sooner, the budget is idle
RECHECK_S = 0.1  # past the tail's threshold, how often a waiting request looks again at how late is late


class Fetches(Protocol):
    """What a race needs: one answer per call (`records.RecordFetcher`)."""

    async def fetch(self, gen_id: str) -> Answer: ...


@dataclass
class TypicalLatency:
    """A clean answer's typical latency: the exp of a smoothed log latency, so a median, which the slow tail
    of a lognormal hardly moves (the mean does). The caller stops feeding it in the day's tail, where only
    the slow answers are still arriving and it would learn that slow is typical."""

    log_s: float = math.log(0.2)
    weight: float = 0.02

    def add(self, latency_s: float) -> None:
        self.log_s += self.weight * (math.log(max(latency_s, 1e-4)) - self.log_s)

    @property
    def seconds(self) -> float:
        return math.exp(self.log_s)


def hedge_after(typical_latency_s: float, *, tail: bool) -> float:
    """Seconds after which an unanswered request is raced. Mid-day, only one probably hung (OpenRouter's
    sometimes are): records stream out as they come, so a slow answer delays nothing but its own record.
    (Racing only what is surely hung, 10 typical latencies and 2 s, measured no better: 89.3% of the limit
    against 90.0% over three interleaved runs each.) In the day's tail, when every fresh record has been
    asked for and the account's budget is idle, the slowest answers are the run's end and racing them is
    free: then one and a half typical latencies is late."""
    if tail:
        return TAIL_HEDGE_AFTER_TYPICAL * typical_latency_s
    return max(HEDGE_AFTER_MIN_S, HEDGE_AFTER_TYPICAL * typical_latency_s)


async def hedged_fetch(fetcher: Fetches, gen_id: str, late_after: Callable[[], float], earliest_s: float,
                       on_hedge: Callable[[], None], *, twin: bool = False,
                       on_overruled: Callable[[Answer], None] = lambda answer: None) -> tuple[Answer, bool]:
    """One answer for the id, and whether it was raced. A request still unanswered `late_after()` seconds
    after it started is raced by a second one ("The Tail at Scale"): a hung record costs about a second, not
    a whole timeout. Late can come sooner while a request waits (the day's tail begins), so past
    `earliest_s` it asks again every RECHECK_S. `twin`: race it from the start (the day's last requests,
    when the window's budget has room for two of each: a lone 429 or 503 on one then costs nothing, where
    alone it would cost its Retry-After at the very end of the day). A record wins; a refusal or failure
    waits up to `late_after()` for the other's record. A raced answer's time is not a round trip (it includes
    the wait before the race) and must not feed the smoothed one. Every other answer that did arrive goes to
    `on_overruled`, so a 429 met by the losing racer is still counted; a racer cancelled unanswered has none."""
    first = asyncio.ensure_future(fetcher.fetch(gen_id))
    if not twin:
        loop = asyncio.get_running_loop()
        started = loop.time()
        step = earliest_s
        while (wait := started + late_after() - loop.time()) > 0:
            done, _ = await asyncio.wait({first}, timeout=min(wait, step))
            step = RECHECK_S
            if done:
                return first.result(), False
    on_hedge()
    second = asyncio.ensure_future(fetcher.fetch(gen_id))
    standing: Answer | None = None
    try:
        standing = await _record_first([first, second], late_after)
        return standing, True
    finally:
        for racer in (first, second):
            if not racer.done():
                racer.cancel()
            elif not racer.cancelled() and racer.exception() is None and racer.result() is not standing:
                on_overruled(racer.result())


async def _record_first(racers: list[asyncio.Future[Answer]], late_after: Callable[[], float]) -> Answer:
    """The first record among the racers' answers; else, once one has failed and the other has had
    `late_after()` more to answer with a record, the first failure."""
    pending = set(racers)
    failure: Answer | None = None
    while pending:
        timeout = None if failure is None else late_after()
        done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break  # the other is late too: the failure stands
        for racer in sorted(done, key=racers.index):
            answer = racer.result()
            if answer.kind is Kind.RECORD:
                return answer
            failure = failure or answer
    assert failure is not None
    return failure


@dataclass
class Breaker:
    """Every answer failing for `give_up_after_s` means the server is down or broken, not one record: stop
    the day now rather than pay each record's whole backoff."""

    give_up_after_s: float
    last_clean: float
    failing: int = 0  # answers since the last clean one

    def judge(self, answer: Answer, now: float) -> None:
        """Note one answer; raise OpenRouterError when the server has failed for too long."""
        if answer.kind in (Kind.TRANSIENT, Kind.THROTTLED):
            self.failing += 1
            if self.failing >= 3 and now - self.last_clean > self.give_up_after_s:
                raise OpenRouterError(
                    f"GET /generation: no request has succeeded for {now - self.last_clean:.0f} s "
                    f"({self.failing} failed in a row; the last: {answer.reason}); stopped after "
                    f"OPENROUTER_GIVE_UP_AFTER_S={self.give_up_after_s:g}, the day is incomplete")
        else:
            self.failing, self.last_clean = 0, now


def auth_message(answer: Answer) -> str:
    hints = {401: "OpenRouter did not accept the key; set OPENROUTER_API_KEY to a valid management key",
             402: "the account behind the key is out of credit",
             403: "this endpoint needs a management key (OPENROUTER_API_KEY holds an inference key or one "
                  "without access)"}
    return f"GET /generation: {answer.reason}: {hints.get(answer.status or 0, '')}"


def percentile(samples: array.array, share: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
