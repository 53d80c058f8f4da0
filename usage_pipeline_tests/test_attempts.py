"""The race of one record's requests, alone: a scripted fetcher answers after set delays (no HTTP)."""

from __future__ import annotations

import asyncio

from usage_pipeline.openrouter.attempts import hedged_fetch
from usage_pipeline.openrouter.records import Answer, Kind

RECORD = Answer(Kind.RECORD, data={"id": "gen-1"}, status=200)
LONE_429 = Answer(Kind.THROTTLED, status=429, reason="429 rate limited", retry_after_s=1.0)
NOT_FOUND = Answer(Kind.NOT_FOUND, status=404, reason="404 not found")


class Scripted:
    """Answers the n-th request with the n-th (delay, answer); counts the requests."""

    def __init__(self, *script: tuple[float, Answer]) -> None:
        self.script = list(script)
        self.requests = 0

    async def fetch(self, gen_id: str) -> Answer:
        delay, answer = self.script[self.requests]
        self.requests += 1
        await asyncio.sleep(delay)
        return answer


def race(fetcher: Scripted, *, twin: bool, late_after: float = 0.2,
         overruled: list[Answer] | None = None) -> tuple[Answer, bool, float]:
    async def run() -> tuple[Answer, bool, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer, raced = await hedged_fetch(fetcher, "gen-1", lambda: late_after, late_after, lambda: None,
                                           twin=twin, on_overruled=(overruled if overruled is not None else []).append)
        return answer, raced, loop.time() - started
    return asyncio.run(run())


def test_twins_go_together_and_a_record_beats_a_faster_refusal() -> None:
    """The day's last requests: a lone 429 on one twin costs nothing when the other brings the record."""
    fetcher = Scripted((0.01, LONE_429), (0.05, RECORD))
    answer, raced, seconds = race(fetcher, twin=True)
    assert answer is RECORD and raced and fetcher.requests == 2 and seconds < 0.2
    fetcher = Scripted((0.01, NOT_FOUND), (0.03, LONE_429))  # both refused: the first refusal stands
    answer, raced, _ = race(fetcher, twin=True)
    assert answer is NOT_FOUND and raced


def test_every_answer_that_arrived_and_did_not_stand_is_handed_over() -> None:
    """A 429 met by the losing twin is still a 429 the server sent: it must reach the report, not vanish."""
    overruled: list[Answer] = []
    race(Scripted((0.01, LONE_429), (0.05, RECORD)), twin=True, overruled=overruled)
    assert overruled == [LONE_429]
    overruled.clear()  # both refused: the second refusal is overruled by the first
    race(Scripted((0.01, NOT_FOUND), (0.03, LONE_429)), twin=True, overruled=overruled)
    assert overruled == [LONE_429]
    overruled.clear()  # the loser still in flight is cancelled: it brought no answer
    race(Scripted((0.01, RECORD), (30.0, LONE_429)), twin=True, overruled=overruled)
    assert overruled == []


def test_a_refusal_waits_only_so_long_for_a_late_twin() -> None:
    """One twin refused, the other hung: the refusal is taken after `late_after`, not after the hang."""
    fetcher = Scripted((0.01, LONE_429), (30.0, RECORD))
    answer, _, seconds = race(fetcher, twin=True, late_after=0.1)
    assert answer is LONE_429 and 0.1 <= seconds < 1.0


def test_a_single_request_is_raced_only_when_late() -> None:
    prompt = Scripted((0.01, RECORD))
    answer, raced, _ = race(prompt, twin=False)
    assert answer is RECORD and not raced and prompt.requests == 1
    hung = Scripted((30.0, RECORD), (0.01, RECORD))
    answer, raced, seconds = race(hung, twin=False, late_after=0.1)
    assert answer is RECORD and raced and hung.requests == 2 and seconds < 1.0
