"""The shared fetch controller and the 429 header readers, alone (pure: no HTTP, time passed in)."""

from __future__ import annotations

import email.utils
import math
import random

import pytest

from usage_pipeline.openrouter.adaptive_limit import MAX_PAUSE_S, AdaptiveLimit, Signal
from usage_pipeline.openrouter.client import PerMinuteLimiter
from usage_pipeline.openrouter.records import RecordRetries, reset_seconds, retry_after_seconds, throttle_hints


def fill(limit: AdaptiveLimit, now: float) -> int:
    """Start requests until the controller says wait; how many started."""
    started = 0
    while limit.wait_time(now) == 0:
        limit.started(now)
        started += 1
    return started


def answer_all(limit: AdaptiveLimit, signal: Signal, now: float, *, reset_at: float | None = None,
               retry_at: float | None = None, budget: int | None = None) -> None:
    for _ in range(limit.in_flight):
        limit.finished(signal, now, latency_s=0.2, reset_at=reset_at, retry_at=retry_at, budget=budget)


def test_slow_start_doubles_per_round_trip_and_the_ceiling_holds() -> None:
    limit = AdaptiveLimit(ceiling=100, initial=4)
    sizes = []
    now = 0.0
    for _ in range(8):
        sizes.append(fill(limit, now))
        assert limit.wait_time(now) == math.inf  # every slot is taken: wait for an answer
        answer_all(limit, Signal.CLEAN, now)
        now += 0.2
    assert sizes[:5] == [4, 8, 16, 32, 64]
    assert max(sizes) == 100 and limit.limit == 100


def test_a_limit_that_is_not_used_does_not_grow() -> None:
    limit = AdaptiveLimit(ceiling=100, initial=10)
    for step in range(50):
        limit.started(step)
        limit.finished(Signal.CLEAN, step + 0.1, latency_s=0.1)  # one at a time: 10 slots, 1 used
    assert limit.limit == 10


def test_a_429_pauses_everything_until_the_named_reset_and_a_burst_shrinks_once() -> None:
    limit = AdaptiveLimit(ceiling=200, initial=100)
    limit.slow_start = False
    fill(limit, 0.0)
    for _ in range(30):  # one burst of refusals, all answered within a round trip
        limit.finished(Signal.THROTTLED, 1.0, reset_at=1.4)
    assert limit.limit == pytest.approx(90)  # x0.9, once
    assert limit.throttled == 30 and limit.decreases == 1
    assert limit.wait_time(1.2) == pytest.approx(0.2)
    assert limit.wait_time(1.4) == 0


def test_the_first_429_ends_the_doubling_with_a_halving() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=400)
    fill(limit, 0.0)
    limit.finished(Signal.THROTTLED, 0.5, reset_at=0.6)
    assert not limit.slow_start
    assert limit.limit == pytest.approx(400 * 0.5 * 0.9)


def test_a_429_without_a_reset_time_uses_the_learned_schedule_then_retry_after_then_backoff() -> None:
    limit = AdaptiveLimit(ceiling=100, initial=50)
    limit.slow_start = False
    fill(limit, 0.0)
    limit.finished(Signal.THROTTLED, 0.1, reset_at=1.0)
    limit.finished(Signal.THROTTLED, 1.1, reset_at=2.0)  # resets one second apart: the window is 1 s
    assert limit.reset_period == pytest.approx(1.0)
    limit.finished(Signal.THROTTLED, 2.3, retry_at=3.3)  # a CDN page: no reset time, Retry-After 1 s
    assert limit.paused_until == pytest.approx(3.0)  # the budget's next reset, not the rounded-up second

    fresh = AdaptiveLimit(ceiling=100, initial=50)
    fill(fresh, 0.0)
    fresh.finished(Signal.THROTTLED, 0.0, retry_at=2.0)
    assert fresh.paused_until == pytest.approx(2.0)

    blind = AdaptiveLimit(ceiling=100, initial=50)
    fill(blind, 0.0)
    blind.finished(Signal.THROTTLED, 0.0)
    first = blind.paused_until
    blind.finished(Signal.THROTTLED, first)
    assert first == pytest.approx(0.25) and blind.paused_until - first == pytest.approx(0.5)
    blind.finished(Signal.THROTTLED, 1e6, reset_at=1e6 + 1e9)
    assert blind.paused_until == pytest.approx(1e6 + MAX_PAUSE_S)  # never an unbounded pause


def test_failures_shrink_gently_and_growth_is_careful_near_the_last_limit() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=200)
    limit.slow_start = False
    fill(limit, 0.0)
    limit.finished(Signal.FAILED, 1.0)
    limit.finished(Signal.FAILED, 1.01)  # same round trip
    assert limit.limit == pytest.approx(190) and limit.decreases == 1
    limit.finished(Signal.FAILED, 2.0)
    assert limit.limit == pytest.approx(180.5)

    near = AdaptiveLimit(ceiling=1000, initial=100)
    near.slow_start, near.limit_at_last_decrease = False, 100.0
    far = AdaptiveLimit(ceiling=1000, initial=100)
    far.slow_start, far.limit_at_last_decrease = False, 300.0
    for controller in (near, far):  # one round trip: a limit's worth of answers
        fill(controller, 0.0)
        answer_all(controller, Signal.CLEAN, 0.2)
    assert near.limit == pytest.approx(101, abs=0.05)
    assert far.limit == pytest.approx(105, abs=0.1)


def test_the_requests_per_second_cap_paces_starts() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=1000, max_rps=50)
    starts, now = 0, 0.0
    while now < 2.0:
        if limit.wait_time(now) == 0:
            limit.started(now)
            starts += 1
        else:
            now += min(max(limit.wait_time(now), 1e-6), 0.01)
    assert 100 <= starts <= 100 + 3  # 50/s for 2 s, plus a 50 ms burst
    with pytest.raises(ValueError, match="max_rps"):
        AdaptiveLimit(ceiling=10, max_rps=0)


def test_header_readers() -> None:
    now_wall = 1_700_000_000.0
    assert retry_after_seconds("3", now_wall) == 3
    assert retry_after_seconds(email.utils.formatdate(now_wall + 10, usegmt=True), now_wall) == pytest.approx(10)
    assert retry_after_seconds("soon", now_wall) is None and retry_after_seconds(None, now_wall) is None
    assert reset_seconds(str(int((now_wall + 0.25) * 1000)), now_wall) == pytest.approx(0.25)
    assert reset_seconds(str(int(now_wall + 2)), now_wall) == pytest.approx(2)  # epoch seconds, tolerated
    assert reset_seconds(str(int((now_wall - 5) * 1000)), now_wall) == 0
    assert reset_seconds("nan", now_wall) is None
    reset_at, retry_at = throttle_hints({"X-RateLimit-Reset": str(int((now_wall + 0.5) * 1000)), "Retry-After": "1"},
                                        100.0, now_wall)
    assert reset_at == pytest.approx(100.5) and retry_at == pytest.approx(101.0)
    assert throttle_hints({}, 100.0, now_wall) == (None, None)


def test_record_retry_delays() -> None:
    policy = RecordRetries()
    assert sum(policy.not_found_delay(n) for n in range(policy.not_found)) == pytest.approx(31.5)
    rng = random.Random(1)
    assert all(0.25 <= policy.transient_delay(0, None, rng) <= 0.5 for _ in range(100))
    assert policy.transient_delay(0, 7.0, rng) == 7.0  # a Retry-After is honoured for the record
    assert policy.transient_delay(10, None, rng) <= policy.cap_s


def test_a_stated_budget_per_window_becomes_the_pace() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=1000)
    fill(limit, 0.0)
    limit.finished(Signal.THROTTLED, 0.5, reset_at=1.0, budget=500)
    assert limit.learned_rps is None  # one reset time tells no window length yet
    limit.finished(Signal.THROTTLED, 1.5, reset_at=2.0, budget=500)
    assert limit.learned_rps == pytest.approx(0.98 * 500)
    answer_all(limit, Signal.CLEAN, 2.0)
    starts, now = 0, 2.0
    while now < 4.0:
        if limit.wait_time(now) == 0:
            limit.started(now)
            limit.finished(Signal.CLEAN, now, latency_s=0.001)
            starts += 1
        else:
            now += min(max(limit.wait_time(now), 1e-6), 0.01)
    assert 2 * 490 <= starts <= 2 * 490 + 26  # two seconds at 490/s, plus one burst
    assert limit.pace_rps == pytest.approx(490)


def test_a_server_failing_every_request_is_given_pauses_that_grow() -> None:
    limit = AdaptiveLimit(ceiling=100, initial=50)
    fill(limit, 0.0)
    for n in range(7):
        limit.finished(Signal.FAILED, 1.0 + n)
    assert limit.paused_until == 0  # seven failures may still be records' own trouble
    limit.finished(Signal.FAILED, 8.0)
    assert limit.paused_until == pytest.approx(8.1)
    limit.finished(Signal.FAILED, 9.0)
    assert limit.paused_until == pytest.approx(9.2)
    for n in range(20):
        limit.finished(Signal.FAILED, 10.0 + n)
    assert limit.paused_until == pytest.approx(29.0 + 2.0)  # capped
    limit.finished(Signal.CLEAN, 40.0, latency_s=0.1)
    paused = limit.paused_until
    limit.finished(Signal.FAILED, 41.0)
    assert limit.paused_until == paused  # a clean answer ended the streak


def test_analytics_queries_are_paced_to_their_per_minute_budget() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = PerMinuteLimiter(3, clock=lambda: now[0], sleep=sleep)
    starts = []
    for _ in range(7):
        limiter.acquire()
        starts.append(now[0])
        now[0] += 1.0  # each query takes a second
    assert starts == [0.0, 1.0, 2.0, 60.0, 61.0, 62.0, 120.0]  # never a fourth within any 60 s
    assert slept == [57.0, 57.0]
