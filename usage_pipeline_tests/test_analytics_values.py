"""Analytics values are read as OpenRouter sends them, the same way for the day's counts, the window
planner and the history: anything else is refused, never coerced."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from usage_pipeline.openrouter import analytics_values

pytestmark = pytest.mark.pure


def test_counts_money_and_buckets_as_sent_are_read_exactly() -> None:
    assert analytics_values.count("1523") == 1523 and analytics_values.count(7) == 7
    assert analytics_values.count(None) is None
    assert analytics_values.money(0.25) == 0.25 and analytics_values.money(3) == 3.0
    row = {"date__hour": "2026-03-02T05:00:00.000Z"}
    assert analytics_values.bucket_start(row, "hour") == dt.datetime(2026, 3, 2, 5, tzinfo=dt.UTC)
    assert analytics_values.bucket_start({"created_at__day": "2026-03-02"}, "day") == dt.datetime(2026, 3, 2,
                                                                                                  tzinfo=dt.UTC)
    assert analytics_values.bucket_start({"request_count": "3"}, "day") is None


@pytest.mark.parametrize("value", ["12.5", "1e3", 12.0, True, "-3", " 12", -1, str(2**63)])
def test_a_count_that_is_not_a_whole_number_as_sent_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="whole number|64-bit"):
        analytics_values.count(value)


@pytest.mark.parametrize("value", ["0.25", None, False, float("nan"), 2**60])
def test_money_that_is_not_a_finite_exact_number_is_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        analytics_values.money(value)


@pytest.mark.parametrize("value", [20260302, "yesterday"])
def test_a_bucket_that_is_not_an_iso_date_time_string_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="date__day"):
        analytics_values.bucket_start({"date__day": value}, "day")
