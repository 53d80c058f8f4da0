"""The pace of record fetches, in virtual time: aiolimiter fixed where it is wrong, each textbook rule alone,
and the whole fetcher against simulated fixed-window, token-bucket and sliding-log limiters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import looptime
import pytest
from aiolimiter import AsyncLimiter

from openrouter_emulator.limiters import LIMITER_KINDS
from usage_pipeline.openrouter.pace import HEADROOM, INITIAL_WINDOW, MIN_TIMEOUT_S, Pace, Rate
from usage_pipeline.openrouter.records import Answer, Kind
from usage_pipeline_tests.simulated_openrouter import World, simulate

pytestmark = pytest.mark.pure

CLEAN = Answer(Kind.RECORD, data={}, status=200)
LONE_429 = Answer(Kind.THROTTLED, status=429, retry_after_s=1.0)
FAILED = Answer(Kind.TRANSIENT, status=503)


def spent(reset_after_s: float) -> Answer:
    return Answer(Kind.THROTTLED, status=429, reset_after_s=reset_after_s, exhausted=True)


def virtual(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run `main()` on a loop whose clock moves only when the loop is idle."""
    loop = looptime.new_event_loop(start=100.0, resolution=1e-9)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def now() -> float:
    return asyncio.get_running_loop().time()


async def attempt(pace: Pace, answer: Answer, latency_s: float = 0.2) -> float:
    """One request through the pace, answered `answer` after `latency_s`; when it was sent."""
    async with pace.request():
        sent = now()
        await asyncio.sleep(latency_s)
    pace.answered(answer, latency_s)
    return sent


# ---- aiolimiter, where it is wrong -----------------------------------------------------------------------


def test_a_rate_changed_while_a_task_waits_applies_to_that_task() -> None:
    async def main() -> float:
        rate = Rate(1.0)
        await rate.acquire()  # the first turn is free; the next would be 1 s away ...
        asyncio.get_running_loop().call_later(0.1, rate.set_rate, 100.0)  # ... until the rate rises
        started = now()
        await rate.acquire()
        return now() - started

    assert virtual(main) == pytest.approx(0.1, abs=0.011)


def test_float_residue_does_not_spin_the_limiters_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiolimiter 1.3.0 left alone re-arms its timer for 1e-18 s forever on a clock that only moves when idle
    (a level of 1.1e-16 tokens after 0.03 - 0.02 s); the rate rounds the residue away."""
    wakes = 0
    original = AsyncLimiter._wake_next

    def counted(self: AsyncLimiter, *args: object) -> None:
        nonlocal wakes
        wakes += 1
        if wakes > 10_000:
            raise AssertionError("the limiter's timer spins")
        original(self, *args)

    monkeypatch.setattr(AsyncLimiter, "_wake_next", counted)

    async def main() -> float:
        rate = Rate(100.0)
        started = now()
        for _ in range(500):
            await rate.acquire()
        return now() - started

    assert virtual(main) == pytest.approx(4.99, abs=0.02) and wakes < 3_000


# ---- each rule alone -------------------------------------------------------------------------------------


def test_the_rate_starts_at_its_initial_window_and_doubles_while_it_holds_requests_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rates: list[float] = []
    set_rate = Rate.set_rate

    def noted(self: Rate, rps: float) -> None:
        rates.append(rps)
        set_rate(self, rps)

    monkeypatch.setattr(Rate, "set_rate", noted)

    async def main() -> float:
        pace = Pace(max_concurrency=1000, max_rps=None, timeout_s=10.0)
        first = pace.rps
        await asyncio.gather(*(attempt(pace, CLEAN, 0.2) for _ in range(1000)))
        return first

    first = INITIAL_WINDOW / 0.2  # requests per round trip, the round trip before any answer taken as 0.2 s
    assert virtual(main) == first
    changes = [rate for earlier, rate in zip([first, *rates], rates, strict=False) if rate != earlier]
    assert changes[:3] == pytest.approx([2 * first, 4 * first, 8 * first], rel=0.01)  # a round trip a doubling


async def answers(pace: Pace, timeline: list[tuple[float, Answer, float]]) -> None:
    """Feed `pace` answers at virtual times: (seconds after the start, answer, its latency)."""
    async with pace.request():  # the first request starts the pace's clock
        pass
    start = now()
    for at, answer, latency in timeline:
        await asyncio.sleep(max(0.0, start + at - now()))
        pace.answered(answer, latency)


def test_a_spent_budget_pauses_every_request_until_its_reset_and_cuts_the_rate_to_what_was_accepted() -> None:
    async def main() -> tuple[Pace, float]:
        pace = Pace(max_concurrency=1000, max_rps=None, timeout_s=10.0)
        pace.rps = 150.0  # as if slow start had got there
        clean = [(0.01 * n, CLEAN, 0.2) for n in range(1, 200)]  # 100 accepted a second, for 2 s
        await answers(pace, [*clean, (2.0, spent(0.5), 0.05), (2.3, CLEAN, 0.2)])
        paused_from = now()
        await attempt(pace, CLEAN, 0.0)  # waits for the reset, 0.5 s after the 429 at 2.0
        return pace, now() - paused_from

    pace, waited = virtual(main)
    assert waited == pytest.approx(0.2, abs=1e-6)
    assert pace.figures.account_pauses == 1 and pace.figures.decreases == 1
    assert pace.rps == pytest.approx((1 + HEADROOM) * 100, rel=0.2)  # what was accepted, not the 150 asked


def test_lone_429s_wait_alone_unless_they_are_a_large_share_of_a_round_trip() -> None:
    async def main(lone_every: int) -> Pace:
        pace = Pace(max_concurrency=1000, max_rps=None, timeout_s=10.0)
        timeline = [(0.005 * n, LONE_429 if n % lone_every == 0 else CLEAN, 0.2) for n in range(1, 400)]
        await answers(pace, timeline)
        return pace

    stray, storm = virtual(lambda: main(50)), virtual(lambda: main(2))
    assert stray.figures.throttled_lone > 0 and (stray.figures.account_pauses, stray.figures.decreases) == (0, 0)
    assert storm.figures.account_pauses > 0 and storm.figures.decreases > 0


def test_a_signal_for_a_request_sent_before_the_last_cut_does_not_cut_again() -> None:
    async def main(late_latency: float) -> int:
        pace = Pace(max_concurrency=1000, max_rps=None, timeout_s=10.0)
        clean = [(0.01 * n, CLEAN, 0.2) for n in range(1, 100)]
        await answers(pace, [*clean, (1.0, spent(0.01), 0.05), (1.21, CLEAN, 0.2),
                             (1.5, spent(0.01), late_latency), (1.71, CLEAN, 0.2)])
        return pace.figures.decreases

    assert virtual(lambda: main(0.6)) == 1  # sent at 0.9, before the cut at 1.21: the same spent window
    assert virtual(lambda: main(0.05)) == 2  # sent at 1.45, after it: the rate is still too high


def test_a_round_trip_mostly_of_failures_halves_the_rate_and_a_few_failures_do_not() -> None:
    async def main(failed_every: int) -> tuple[float, float, int]:
        pace = Pace(max_concurrency=1000, max_rps=40.0, timeout_s=10.0)
        before = pace.rps
        await answers(pace, [(0.005 * n, FAILED if n % failed_every == 0 else CLEAN, 0.2) for n in range(1, 60)])
        return before, pace.rps, pace.figures.decreases

    assert virtual(lambda: main(1 + 10**6)) == (40.0, 40.0, 0)
    before, after, cuts = virtual(lambda: main(1))
    assert cuts >= 1 and after == pytest.approx(before / 2**cuts)
    assert virtual(lambda: main(30))[2] == 0


def test_an_attempt_times_out_at_twice_the_recent_p99_within_bounds() -> None:
    async def main(latency_s: float) -> float:
        pace = Pace(max_concurrency=1000, max_rps=None, timeout_s=10.0)
        await answers(pace, [(0.001 * n, CLEAN, latency_s) for n in range(300)])
        return pace.attempt_timeout_s

    assert virtual(lambda: main(0.4)) == pytest.approx(0.8)
    assert virtual(lambda: main(0.01)) == MIN_TIMEOUT_S
    assert virtual(lambda: main(9.0)) == 10.0


# ---- the whole fetcher against each kind of limiter ------------------------------------------------------


@pytest.mark.parametrize("limiter", LIMITER_KINDS)
def test_each_limiter_is_used_to_the_full_without_hammering_it(limiter: str) -> None:
    """900 records at 50/s with 200 ms answers and the issue's fault mix (1% lone 429s, 5% first-fetch 404s,
    hangs), on a limiter the pace was never told about: every record, most of the budget, and refusals bounded
    (most of them are slow start's overshoot, which a bucket's burst hides until it is empty)."""
    world = World(limiter=limiter, limit=50.0, fault_503=0.0, seed=3)
    result = simulate(world, 900)
    assert result["records"] == 900 and result["missing"] == 0
    assert result["accepted"] / result["seconds"] >= 0.9 * world.limit  # the budget, retries included
    assert result["limited"] <= 0.25 * result["records"]
    assert result["limit_rps"] == pytest.approx(world.limit, rel=0.1)  # the limit it learned, for the metadata


def test_without_a_limit_the_cap_alone_bounds_the_pace() -> None:
    result = simulate(World(limiter="fixed", limit=0.0, fault_503=0.0, first_404=0.0, lone_429=0.0, seed=4), 600)
    assert result["records"] == 600 and result["limited"] == 0 and result["pauses"] == 0
    assert result["limit_rps"] is None  # never throttled, no cap: no limit to measure the rate against


def test_the_limit_a_run_met_is_the_configured_cap_until_the_server_throttles_below_it() -> None:
    assert Pace(8, 40.0, 10.0).limit_rps == 40.0 and Pace(8, None, 10.0).limit_rps is None
    throttled = Pace(8, 40.0, 10.0)
    throttled.figures.throttled_rps.extend([31.0, 29.0, 30.0])
    assert throttled.limit_rps == 30.0  # the median of what the server accepted when it said the budget was spent
