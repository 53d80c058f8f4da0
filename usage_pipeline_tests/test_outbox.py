"""The outbox alone (pure): records leave by size or age, whatever their window; a window closes only once
its ids are settled and every batch carrying its records was acknowledged."""

from __future__ import annotations

import datetime as dt

import pytest

from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.openrouter.outbox import OpenWindow, RecordOutbox
from usage_pipeline.openrouter.windows import Window

T0 = dt.datetime(2025, 3, 10, tzinfo=dt.UTC)


def record(gen_id: str) -> Generation:
    return Generation.from_api({"id": gen_id, "created_at": "2025-03-10T01:02:03.456789Z", "model": "m"})


def window(no: int, ids: int) -> OpenWindow:
    return OpenWindow(Window(T0 + dt.timedelta(hours=no), T0 + dt.timedelta(hours=no + 1), ids), no, unsettled=ids)


def test_records_leave_by_size_without_waiting_for_the_rest_of_their_window() -> None:
    outbox = RecordOutbox(batch_size=3, max_age_s=1.0)
    first, second = window(0, 100), window(1, 100)
    assert outbox.add(record("a"), first, 0.0) is None
    assert outbox.add(record("b"), second, 0.1) is None
    batch = outbox.add(record("c"), first, 0.2)  # full: 97 of the first window's ids are still out there
    assert batch is not None and [r.id for r in batch.records] == ["a", "b", "c"]
    assert batch.windows == {first: 2, second: 1} and len(outbox) == 0
    assert (first.unwritten, second.unwritten) == (2, 1)


def test_records_leave_by_age() -> None:
    outbox = RecordOutbox(batch_size=1000, max_age_s=1.0)
    only = window(0, 10)
    outbox.add(record("a"), only, 5.0)
    outbox.add(record("b"), only, 5.7)
    assert outbox.next_due() == 6.0 and outbox.due(5.9) is None
    batch = outbox.due(6.0)
    assert batch is not None and len(batch.records) == 2 and outbox.next_due() is None
    assert outbox.due(100.0) is None and outbox.take() is None


def test_a_window_closes_once_settled_and_written_and_only_then() -> None:
    outbox = RecordOutbox(batch_size=2, max_age_s=1.0)
    w = window(0, 3)
    full = outbox.add(record("a"), w, 0.0) or outbox.add(record("b"), w, 0.0)
    assert full is not None
    for _ in range(3):
        outbox.settled(w)  # a and b fetched, the third given up on (reported missing)
    assert not w.done  # settled, but its records are not written yet
    assert outbox.written(full) == [w] and w.done
    w.closed = True
    assert not w.done  # closed once
    with pytest.raises(ValueError, match="no unsettled id"):
        outbox.settled(w)


def test_a_window_with_a_straggler_stays_open_while_its_written_neighbours_close() -> None:
    outbox = RecordOutbox(batch_size=10, max_age_s=1.0)
    slow, quick = window(0, 2), window(1, 1)
    outbox.add(record("a"), slow, 0.0)
    outbox.settled(slow)
    outbox.add(record("b"), quick, 0.0)
    outbox.settled(quick)
    batch = outbox.take()
    assert batch is not None
    assert outbox.written(batch) == [quick]  # the slow window's second id is still in 404 back-off
    assert slow.unwritten == 0 and slow.unsettled == 1 and not slow.done


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RecordOutbox(batch_size=0, max_age_s=1.0)
    with pytest.raises(ValueError):
        RecordOutbox(batch_size=10, max_age_s=0)
