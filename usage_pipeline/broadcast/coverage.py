"""How much of a day push delivered: the nightly capture's view of the journal, for its run metadata.

Broadcast promises no completeness (sampling, drops, no retries), so the nightly pull stays the proof and
push is measured against it: the share of the day's stored ids that push announced, the ids it missed, the
ids it announced that the day does not hold (an error span of a request never recorded, say), and the ids
whose span figures differ from their record (`drain.span_differences`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from usage_pipeline.broadcast import journal

SHOWN_IDS = 20  # ids listed in the metadata; the counts are whole


def push_coverage(journal_path: Path, day: dt.date, stored_ids: Callable[[], Collection[str]]) -> dict[str, Any]:
    """What push delivered of `day` against the day's stored ids (read only when there is something to compare),
    or nothing when push was not set up for the day: no journal, or a journal holding no delivery of that day.
    The rule never states a coverage the journal cannot know: days before push was set up, or whose ids were
    pruned, say nothing (and so does a day push delivered nothing of at all)."""
    if not journal_path.exists():
        return {}
    connection = journal.connect(journal_path)
    try:
        pushed = journal.day_ids(connection, day)
        differs = journal.day_mismatches(connection, day)
    finally:
        connection.close()
    if not pushed:
        return {}
    stored = set(stored_ids())
    missed = sorted(stored - set(pushed))
    unknown = sorted(set(pushed) - stored)
    return {
        "push_ids": len(pushed),
        "push_coverage": round(len(stored & set(pushed)) / len(stored), 6) if stored else 1.0,
        "push_missed": len(missed),
        "push_missed_ids": missed[:SHOWN_IDS],
        "push_not_in_day": len(unknown),
        "push_not_in_day_ids": unknown[:SHOWN_IDS],
        "push_differs": len(differs),
        "push_differs_ids": dict(sorted(differs.items())[:SHOWN_IDS]),
    }


def prove_day(journal_path: Path, day: dt.date) -> None:
    """Note that the nightly's checks proved `day` exact, so the drain may prune its drained ids (when push is
    set up: no journal is created here)."""
    if journal_path.exists():
        connection = journal.connect(journal_path)
        try:
            journal.prove_day(connection, day, time.time())
        finally:
            connection.close()
