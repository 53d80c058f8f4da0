"""The shared fetch controller and the 429 header readers, alone (pure: no HTTP, time passed in)."""

from __future__ import annotations

import email.utils
import math
import random

import pytest

from usage_pipeline.openrouter.adaptive_limit import MAX_PAUSE_S, AdaptiveLimit, Signal
from usage_pipeline.openrouter.client import PerMinuteLimiter
from usage_pipeline.openrouter.records import (
    RecordRetries,
    budget_spent,
    reset_seconds,
    retry_after_seconds,
    throttle_hints,
)


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


def test_an_exhausted_budget_pauses_everything_until_the_named_reset_and_a_burst_shrinks_once() -> None:
    limit = AdaptiveLimit(ceiling=200, initial=100)
    limit.slow_start = False
    fill(limit, 0.0)
    for _ in range(30):  # one burst of refusals, all answered within a round trip
        limit.finished(Signal.EXHAUSTED, 1.0, reset_at=1.4)
    assert limit.limit == pytest.approx(90)  # x0.9, once
    assert limit.throttled == 30 and limit.decreases == 1 and limit.account_pauses == 1
    assert limit.wait_time(1.2) == pytest.approx(0.2)
    assert limit.wait_time(1.4) == 0
    assert limit.paused_s == pytest.approx(0.4)
    limit.finished(Signal.EXHAUSTED, 1e6, reset_at=1e6 + 1e9)
    assert limit.paused_until == pytest.approx(1e6 + MAX_PAUSE_S)  # never an unbounded pause


def test_the_first_exhausted_budget_ends_the_doubling_without_halving() -> None:
    """A rate budget is answered by the pause and then the pace; halving the concurrency as well would only
    slow the climb back to what the pace needs."""
    limit = AdaptiveLimit(ceiling=1000, initial=400)
    fill(limit, 0.0)
    limit.finished(Signal.EXHAUSTED, 0.5, reset_at=0.6)
    assert not limit.slow_start
    assert limit.limit == pytest.approx(400 * 0.9)


def test_a_lone_429_pauses_nothing_and_trims_once_per_round_trip_by_half_its_share() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=100)
    fill(limit, 0.0)
    answer_all(limit, Signal.CLEAN, 0.2)  # a round trip of 100 clean answers, the last ...
    limit.started(0.2)
    limit.finished(Signal.THROTTLED, 0.2, retry_at=1.2)  # ... and one lone 429: Retry-After for itself only
    assert limit.paused_until == 0 and limit.wait_time(0.2) == 0
    before = limit.limit
    limit.started(0.2)
    limit.finished(Signal.FAILED, 0.5)  # the next round trip's first answer closes the last one
    assert limit.limit == pytest.approx(before * (1 - 1 / 101 / 2))  # 1 of 101: a 0.5% trim ...
    assert limit.slow_start and limit.decreases == 0  # ... not congestion: the doubling goes on

    congested = AdaptiveLimit(ceiling=1000, initial=100)
    fill(congested, 0.0)
    for n in range(100):
        congested.finished(Signal.THROTTLED if n % 10 == 0 else Signal.CLEAN, 0.2, latency_s=0.2)
    before = congested.limit
    congested.started(0.2)
    congested.finished(Signal.FAILED, 0.5)
    assert congested.limit == pytest.approx(before * (1 - 0.1 / 2))  # 10%: congestion, once per round trip
    assert not congested.slow_start and congested.decreases == 1 and congested.paused_until == 0


def test_one_percent_of_lone_429s_costs_about_one_percent_not_half_the_limit() -> None:
    """Plain AIMD (x0.9 per round trip with any 429) settles near 30 in flight at 1% lone 429s; the
    proportional trim lets the limit climb to what the work needs."""
    rng = random.Random(3)
    limit = AdaptiveLimit(ceiling=400)
    now = 0.0
    for _ in range(300):
        fill(limit, now)
        now += 0.2
        for _ in range(limit.in_flight):
            signal = Signal.THROTTLED if rng.random() < 0.01 else Signal.CLEAN
            limit.finished(signal, now, latency_s=0.2, retry_at=now + 1)
    assert limit.throttled > 100
    assert limit.limit >= 0.9 * 400 and limit.paused_until == 0


def test_lone_429s_making_a_fifth_of_a_round_trip_pause_everything() -> None:
    """A CDN's 429 pages carry no rate-limit header; when they are a fifth of the answers, the account's
    budget, not a request, is spent: everything waits (the learned reset, else Retry-After, else a backoff
    that doubles per round trip, not per 429)."""
    def burst(limit: AdaptiveLimit, now: float, retry_at: float | None = None) -> list[float]:
        pauses = []
        for _ in range(10):
            limit.finished(Signal.CLEAN, now, latency_s=0.2)
        for _ in range(6):
            limit.finished(Signal.THROTTLED, now, retry_at=retry_at)
            pauses.append(limit.paused_until)
        return pauses

    with_retry_after = AdaptiveLimit(ceiling=100, initial=50)
    fill(with_retry_after, 0.0)
    assert burst(with_retry_after, 0.1, retry_at=1.1) == [0, 0, 0, 1.1, 1.1, 1.1]  # 4 of 20 answers

    blind = AdaptiveLimit(ceiling=100, initial=50)
    fill(blind, 0.0)
    assert burst(blind, 0.1)[3:] == [pytest.approx(0.35)] * 3  # 0.25 s, once for the round trip
    assert burst(blind, 0.35)[-1] == pytest.approx(0.35 + 0.5)  # the next round trip doubles it
    assert blind.account_pauses == 2

    scheduled = AdaptiveLimit(ceiling=100, initial=50)
    fill(scheduled, 0.0)
    scheduled.finished(Signal.EXHAUSTED, 0.1, reset_at=1.0)
    scheduled.finished(Signal.EXHAUSTED, 1.1, reset_at=2.0)  # resets a second apart: the window is 1 s
    assert scheduled.schedule.period == pytest.approx(1.0)
    assert burst(scheduled, 2.3, retry_at=3.3)[-1] == pytest.approx(3.0)  # the budget's next reset


def test_a_lone_failure_shrinks_nothing_a_tenth_of_a_round_trip_does_once() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=200)
    limit.slow_start = False
    fill(limit, 0.0)
    limit.finished(Signal.FAILED, 1.0)
    limit.finished(Signal.CLEAN, 1.5, latency_s=0.2)  # closes the round: one failure in one answer
    assert limit.limit == 200 and limit.decreases == 0
    for n in range(100):
        limit.finished(Signal.FAILED if n < 10 else Signal.CLEAN, 2.0, latency_s=0.2)
    limit.finished(Signal.CLEAN, 2.5, latency_s=0.2)
    assert limit.limit == pytest.approx(200 * 0.95) and limit.decreases == 1


def test_growth_is_careful_near_the_last_limit() -> None:
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
    # Only the account-wide headers make a 429 speak for every request; Retry-After alone does not.
    assert budget_spent({"X-RateLimit-Remaining": "0"}, None) and budget_spent({}, reset_at)
    assert not budget_spent({"Retry-After": "1"}, None) and not budget_spent({"X-RateLimit-Remaining": "7"}, None)


def test_record_retry_delays() -> None:
    policy = RecordRetries()
    assert [policy.not_found_delay(n) for n in range(policy.not_found)] == [0.25, 1, 2, 4, 8, 16]  # 31.25 s
    assert policy.not_found_delay(0, tail=True) == 0.05 and policy.not_found_delay(1, tail=True) == 1
    rng = random.Random(1)
    assert all(0.25 <= policy.transient_delay(0, None, rng) <= 0.5 for _ in range(100))
    assert policy.transient_delay(0, 7.0, rng) == 7.0  # a Retry-After is honoured for the record
    assert policy.transient_delay(10, None, rng) <= policy.cap_s
    assert policy.throttled_delay(0, 1.0, rng) == 1.0  # a lone 429 waits its own Retry-After ...
    assert all(0.125 <= policy.throttled_delay(0, None, rng) <= 0.25 for _ in range(100))  # ... else a short one
    assert policy.throttled_delay(40, None, rng) <= policy.cap_s


def test_a_stated_budget_per_window_becomes_the_pace() -> None:
    limit = AdaptiveLimit(ceiling=1000, initial=1000)
    fill(limit, 0.0)
    limit.finished(Signal.EXHAUSTED, 0.1, reset_at=1.0, budget=500)
    assert limit.learned_rps is None  # one reset time tells no window length yet
    limit.finished(Signal.EXHAUSTED, 1.1, reset_at=2.0, budget=500)
    assert limit.learned_rps == pytest.approx(500)
    answer_all(limit, Signal.CLEAN, 2.0)
    starts, now = 0, 2.0
    while now < 4.0:
        if limit.wait_time(now) == 0:
            limit.started(now)
            limit.finished(Signal.CLEAN, now, latency_s=0.001)
            starts += 1
        else:
            now += min(max(limit.wait_time(now), 1e-6), 0.01)
    assert 2 * 500 <= starts <= 2 * 500 + 26  # two seconds at 500/s, plus one burst
    assert limit.pace_rps == pytest.approx(500)


def test_what_fits_in_the_windows_budget_may_start_unpaced_and_leaves_the_pace_no_debt() -> None:
    """The end of a day: the last requests fit in what the window has left, so they go now (up to the
    ceiling in flight) rather than spread over the window, and the pace afterwards is as before."""
    limit = AdaptiveLimit(ceiling=400, initial=1000)
    fill(limit, 0.0)
    limit.finished(Signal.EXHAUSTED, 0.1, reset_at=1.0, budget=500)
    limit.finished(Signal.EXHAUSTED, 1.1, reset_at=2.0, budget=500)
    answer_all(limit, Signal.CLEAN, 2.0)
    assert limit.pace_rps == pytest.approx(500) and limit.budget_left(2.0) == 500
    paced = 0
    while limit.wait_time(2.0) == 0:
        limit.started(2.0)
        paced += 1
    assert 1 <= paced <= 26  # at most a 50 ms burst of the pace, then wait
    unpaced = 0
    while limit.wait_time(2.0, unpaced=True) == 0:
        limit.started(2.0)
        unpaced += 1
    assert paced + unpaced == 400  # the ceiling in flight, not the pace
    assert limit.budget_left(2.0) == 100
    answer_all(limit, Signal.CLEAN, 2.01)
    assert limit.wait_time(2.05) == 0  # no debt: 40 ms of the pace later, a request may start


def test_while_paced_in_flight_never_shrinks_below_what_the_pace_needs() -> None:
    """Little's law: 500/s at 200 ms needs ~100 in flight; shrinking below that would lose the pace."""
    limit = AdaptiveLimit(ceiling=1000, initial=10)
    limit.finished(Signal.EXHAUSTED, 0.1, reset_at=1.0, budget=500)
    limit.finished(Signal.EXHAUSTED, 1.1, reset_at=2.0, budget=500)
    assert limit.limit < 10 and limit.round_trip_s == pytest.approx(0.2)
    assert limit.capacity == int(1.5 * 500 * 0.2)
    assert AdaptiveLimit(ceiling=50).capacity == 32 and AdaptiveLimit(ceiling=50, max_rps=1000).capacity == 50


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
