"""The capture keeps full collections off objects older than itself, and gives them back when it ends,
also when captures overlap."""

from __future__ import annotations

import gc

from usage_pipeline.openrouter.gc_freeze import holders, long_lived_frozen


def test_objects_are_frozen_while_a_capture_runs_and_unfrozen_by_the_last_to_end() -> None:
    before = gc.get_freeze_count()
    old = [object() for _ in range(10)]
    with long_lived_frozen():
        assert gc.get_freeze_count() >= len(old) and holders() == 1
        with long_lived_frozen():  # an overlapping capture shares the freeze
            assert holders() == 2
        assert holders() == 1 and gc.get_freeze_count() > 0  # the first to end leaves it in place
    assert holders() == 0 and gc.get_freeze_count() == before == 0


def test_the_freeze_ends_when_the_capture_fails() -> None:
    try:
        with long_lived_frozen():
            raise RuntimeError("the day failed")
    except RuntimeError:
        pass
    assert holders() == 0 and gc.get_freeze_count() == 0
