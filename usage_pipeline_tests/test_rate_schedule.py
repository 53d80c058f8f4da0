"""The budget window learned from 429s' reset times, alone (pure): exact after a pause of several windows,
immune to clock jitter, and no pace at all from resets that follow no grid."""

from __future__ import annotations

import pytest

from usage_pipeline.openrouter.rate_schedule import ResetSchedule, approximate_gcd


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
