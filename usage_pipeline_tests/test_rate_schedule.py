"""The budget window learned from 429s' reset times, alone (pure): exact after a pause of several windows,
immune to clock jitter, no pace at all from resets that follow no grid, bounded by our own starts, and what
a window has left."""

from __future__ import annotations

import pytest

from usage_pipeline.openrouter.rate_schedule import EXPLAINED_WINDOWS, ResetSchedule, approximate_gcd


def test_a_budget_window_is_learned_exactly_even_after_a_pause_of_several_windows() -> None:
    """Resets named four windows apart must not teach a four-second window (a quarter of the real pace, and
    a pace that low never meets the 429 that would correct it): the window errs short, then converges."""
    schedule = ResetSchedule()
    schedule.learn(reset_at=11.0, now=10.3, budget=500)
    assert schedule.period is None and schedule.next_reset(10.5) == 11.0
    schedule.learn(reset_at=15.0, now=14.9, budget=500)
    assert schedule.period is not None and schedule.period <= 1.0  # 4 / floor(4 / 0.7) = 0.8: a pace too high
    schedule.learn(reset_at=16.0, now=15.05, budget=500)  # a 429 early in a window: it is at least 0.95 s
    assert schedule.period == pytest.approx(1.0) and schedule.rate == pytest.approx(500)
    schedule.learn(reset_at=23.0, now=22.2, budget=500)  # 7 windows later: still 1 s
    assert schedule.period == pytest.approx(1.0)
    assert schedule.next_reset(24.5) == pytest.approx(25.0)
    assert approximate_gcd(4.0, 6.001) == pytest.approx(2.0, abs=0.01)
    assert approximate_gcd(3.0, 3.0) == 3.0


def test_gaps_come_from_the_servers_stamps_and_resets_on_no_grid_teach_no_pace() -> None:
    """Reset times converted through two client clocks jitter by milliseconds (the divisor of 1.0 and 1.03
    is 0.03: a pace 33 times too high); the server's own stamps are exact. Resets that follow no grid
    (a sliding window) give no window at all rather than a wrong one."""
    jittery = ResetSchedule()
    for n, jitter in enumerate([0.0, 0.03, -0.02, 0.025]):
        jittery.learn(reset_at=n + 1.0 + jitter, now=n + 0.1, budget=500, stamp=1_700_000_000.0 + n)
    assert jittery.period == pytest.approx(1.0) and jittery.rate == pytest.approx(500)
    sliding = ResetSchedule()
    for reset in (1.0, 2.0, 3.37):
        sliding.learn(reset_at=reset, now=reset - 0.9, budget=500)
    assert sliding.period is None and sliding.rate is None


def _start_at_rate(schedule: ResetSchedule, begin: float, end: float, rate: float) -> None:
    """Log our own starts at `rate` per second over [begin, end)."""
    n = int((end - begin) * rate)
    for i in range(n):
        schedule.started(begin + i / rate)


def test_a_window_our_own_starts_spent_is_not_taken_for_a_shorter_one() -> None:
    """The start of a day, measured: two 429s late in 1 s windows (L ~0.3 s) alone give a window of 1/3 s,
    a pace three times the budget. Our own 500 starts in the second before the 429 spent that window: the
    window is at least as long as they took, so it is 1 s from the first estimate on."""
    schedule = ResetSchedule()
    _start_at_rate(schedule, 0.0, 0.7, 600)
    schedule.learn(reset_at=1.0, now=0.7, budget=500)
    _start_at_rate(schedule, 1.0, 1.7, 600)  # ~420 in this window so far, more in flight
    schedule.learn(reset_at=2.0, now=1.7, budget=500)
    assert schedule.period == pytest.approx(1.0) and schedule.rate == pytest.approx(500)
    blind = ResetSchedule()  # the same 429s without our starts: the err-short estimate of before
    blind.learn(reset_at=1.0, now=0.7, budget=500)
    blind.learn(reset_at=2.0, now=1.7, budget=500)
    assert blind.period == pytest.approx(1 / 3)


def test_another_clients_spending_falls_back_to_erring_short_and_a_stale_bound_is_dropped() -> None:
    """Our own starts that cannot have spent the budget bound nothing (another client spent it); a bound
    that no 429 renews for EXPLAINED_WINDOWS windows is dropped, so a pace learned while another client
    shared the account cannot stay too low."""
    shared = ResetSchedule()
    _start_at_rate(shared, 0.0, 0.7, 100)  # 70 starts: far from the budget
    shared.learn(reset_at=1.0, now=0.7, budget=500)
    _start_at_rate(shared, 1.0, 1.7, 100)
    shared.learn(reset_at=2.0, now=1.7, budget=500)
    assert shared.period == pytest.approx(1 / 3)
    stale = ResetSchedule()
    _start_at_rate(stale, 0.0, 0.7, 600)
    stale.learn(reset_at=1.0, now=0.7, budget=500)
    _start_at_rate(stale, 1.0, 1.7, 600)
    stale.learn(reset_at=2.0, now=1.7, budget=500)
    assert stale.period == pytest.approx(1.0)
    stale.started(1.7 + EXPLAINED_WINDOWS * 1.0 + 0.1)  # windows with no 429
    assert stale.period == pytest.approx(1 / 3)


def test_what_the_window_has_left_is_counted_from_our_own_starts() -> None:
    schedule = ResetSchedule()
    assert schedule.budget_left(0.5) is None  # no window known
    schedule.learn(reset_at=1.0, now=0.1, budget=500, stamp=1_700_000_001.0)
    schedule.learn(reset_at=2.0, now=1.1, budget=500, stamp=1_700_000_002.0)
    _start_at_rate(schedule, 2.0, 2.5, 400)  # 200 starts in the window ending at 3.0
    assert schedule.budget_left(2.6) == 300
    assert schedule.budget_left(3.2) == 500  # the next window: nothing spent yet
    schedule.started(3.3)
    assert schedule.budget_left(3.4) == 499
