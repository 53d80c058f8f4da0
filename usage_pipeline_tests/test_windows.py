"""Window planning from request counts (pure: no HTTP)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from usage_pipeline.openrouter.enumeration import (
    MIN_WIDTH,
    Bucket,
    Window,
    WindowPlan,
    WindowTooDense,
    expected_between,
    plan,
    split,
)

pytestmark = pytest.mark.pure

DAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def hourly(counts: list[int]) -> list[Bucket]:
    return [Bucket(DAY + h * HOUR, DAY + (h + 1) * HOUR, c) for h, c in enumerate(counts)]


def test_windows_cover_the_day_exactly_with_equal_expected_counts() -> None:
    counts = [int(200 + 3800 * math.exp(-((h - 14) / 4) ** 2)) for h in range(24)]
    windows = plan(hourly(counts), DAY, DAY + 24 * HOUR, 10_000)
    assert windows[0].start == DAY and windows[-1].end == DAY + 24 * HOUR
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))
    assert len(windows) == math.ceil(sum(counts) / 9_000)
    assert all(w.expected <= 9_000 for w in windows)
    assert sum(w.expected for w in windows) == sum(counts)


def test_an_hour_bigger_than_a_window_is_cut_inside_the_hour() -> None:
    counts = [0] * 24
    counts[9] = 45_000
    windows = plan(hourly(counts), DAY, DAY + 24 * HOUR, 10_000)
    inside = [w for w in windows if DAY + 9 * HOUR < w.end < DAY + 10 * HOUR]
    assert len(windows) == 5 and len(inside) == 4
    assert all(w.start.microsecond % 1000 == 0 for w in windows)  # millisecond cuts


def test_a_split_always_makes_progress_even_when_all_traffic_sits_in_the_first_millisecond() -> None:
    minute = dt.timedelta(minutes=1)
    edge = DAY + 10 * minute
    buckets = [Bucket(edge - minute, edge, 9_000), Bucket(edge, edge + minute, 0)]
    start = edge - MIN_WIDTH
    pieces = split(buckets, start, start + 10 * MIN_WIDTH, parts=4)
    assert len(pieces) >= 2
    assert pieces[0].start == start and pieces[-1].end == start + 10 * MIN_WIDTH
    assert expected_between(buckets, start, start + 10 * MIN_WIDTH) > 0


def test_a_window_too_narrow_to_cut_stays_whole() -> None:
    start = DAY + HOUR
    assert len(split(hourly([1000] * 24), start, start + MIN_WIDTH, parts=3)) == 1


def drain(queue: WindowPlan) -> list[Window]:
    out = []
    while (window := queue.next()) is not None:
        out.append(window)
    return out


def covers(windows: list[Window], start: dt.datetime, end: dt.datetime) -> bool:
    return windows[0].start == start and windows[-1].end == end and all(
        a.end == b.start for a, b in zip(windows, windows[1:], strict=False))


def test_the_window_queue_hands_out_the_plan_in_time_order() -> None:
    buckets = hourly([3000] * 24)
    queue = WindowPlan(buckets, DAY, DAY + 24 * HOUR, 10_000)
    assert len(queue) == math.ceil(72_000 / 9_000)
    assert covers(drain(queue), DAY, DAY + 24 * HOUR) and queue.next() is None


def test_a_cut_window_is_split_first_and_the_rest_replanned_against_the_learned_cap() -> None:
    buckets = hourly([3000] * 24)
    queue = WindowPlan(buckets, DAY, DAY + 24 * HOUR, 10_000)
    first = queue.next()
    assert first is not None
    queue.truncated(first, 2_000)  # the server caps at 2,000 rows, below the 10,000 asked for
    assert queue.row_limit == 2_000 and queue.splits == 1
    rest = drain(queue)
    assert covers(rest, first.start, DAY + 24 * HOUR)
    assert all(w.expected <= 0.9 * 2_000 + 1e-6 for w in rest)
    assert len(rest) == math.ceil(72_000 / 1_800)


def test_a_cut_at_the_asked_limit_keeps_the_limit() -> None:
    queue = WindowPlan(hourly([5000] * 24), DAY, DAY + 24 * HOUR, 10_000)
    window = queue.next()
    assert window is not None
    queue.truncated(window, 10_000)
    assert queue.row_limit == 10_000 and queue.splits == 1
    assert covers(drain(queue), window.start, DAY + 24 * HOUR)


def test_a_cut_window_of_one_millisecond_cannot_be_enumerated() -> None:
    queue = WindowPlan(hourly([100] * 24), DAY, DAY + MIN_WIDTH, 10_000)
    window = queue.next()
    assert window is not None
    with pytest.raises(WindowTooDense, match="cannot be enumerated exactly"):
        queue.truncated(window, 30)
