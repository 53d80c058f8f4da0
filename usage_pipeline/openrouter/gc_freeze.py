"""Keep Python's full garbage collections off the objects that existed before a capture began.

A full (generation 2) collection walks every tracked object in the process: in a Dagster run worker that
is every module Dagster, pandas and DuckDB imported, and it stops every thread while it walks. Measured on
the fault-mix benchmark (2 cores, a 20,000-generation day through `record_day`), full collections came
every ~12 s and took 70-95 ms each; the fetching thread started nothing meanwhile, so each cost about 40 of
the budget's 500 requests that second, and the one at the day's end delayed its last requests. Frozen
(`gc.freeze`), those objects are left out of collections: the same collections took 8-37 ms, and the
budget lost mid-day fell from ~100 requests to ~55.

Frozen objects are not collected while frozen, so garbage cycles among them wait until the capture ends
and everything is unfrozen. Captures that overlap share one freeze (a count): the last to end unfreezes.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0


@contextmanager
def long_lived_frozen() -> Iterator[None]:
    """While inside, objects that existed on entry are out of the collector's way."""
    global _holders
    with _lock:
        if _holders == 0:
            gc.freeze()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()


def holders() -> int:
    """How many captures hold the freeze now (for tests)."""
    return _holders
