"""The counters' arithmetic over time (`stats.Stats`) with an injected clock: rates, the peak of whole
one-second buckets, the delay log. No waiting: the clock is a number the test sets."""

from __future__ import annotations

from openrouter_emulator.stats import DELAY_LOG_SIZE, Stats


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rates_divide_by_the_elapsed_time_and_the_peak_counts_only_whole_buckets() -> None:
    clock = Clock(1000.0)
    stats = Stats(clock)
    for at in (1000.1, 1000.2, 1000.3):  # bucket 0: 3 answers
        clock.now = at
        stats.answered("/generation", 200)
    for at in (1001.5, 1001.6, 1001.7, 1001.8, 1001.9):  # bucket 1: 5 answers, one a 404
        clock.now = at
        stats.answered("/generation", 404 if at == 1001.9 else 200)
    clock.now = 1001.95
    snapshot = stats.snapshot()
    assert snapshot["peak_served_per_second"] == 3  # bucket 1 is still counting: not a whole second yet
    assert snapshot["elapsed_s"] == 1.95
    assert (snapshot["served_per_second"], snapshot["ok_per_second"]) == (round(8 / 1.95, 3), round(7 / 1.95, 3))
    clock.now = 1002.0
    assert stats.snapshot()["peak_served_per_second"] == 5  # bucket 1 has ended
    clock.now = 1004.5
    stats.answered("/key", 200)  # bucket 4 starts; 2 and 3 were empty
    assert stats.snapshot()["peak_served_per_second"] == 5
    assert stats.snapshot()["by_status"] == {"200": 8, "404": 1}
    clock.now = 1010.0
    stats.reset()
    assert stats.snapshot()["peak_served_per_second"] == stats.snapshot()["total"] == 0
    assert stats.snapshot()["served_per_second"] == 0.0  # elapsed 0: no division


def test_the_delay_log_keeps_the_latest_answers_in_order_until_a_reset() -> None:
    stats = Stats(Clock(0.0))
    stats.answered("/generation", 200, 0.6)
    stats.answered("/generation", 429, 0.06)
    stats.answered("/analytics/query", 200)
    assert stats.delays() == {"delays": [{"path": "/generation", "status": 200, "delay_ms": 600.0},
                                         {"path": "/generation", "status": 429, "delay_ms": 60.0},
                                         {"path": "/analytics/query", "status": 200, "delay_ms": 0.0}]}
    for n in range(DELAY_LOG_SIZE):
        stats.answered("/key", 200, n / 1000)
    kept = stats.delays()["delays"]
    assert len(kept) == DELAY_LOG_SIZE and kept[0]["delay_ms"] == 0.0 and kept[-1]["delay_ms"] == DELAY_LOG_SIZE - 1
    stats.reset()
    assert stats.delays() == {"delays": []}
