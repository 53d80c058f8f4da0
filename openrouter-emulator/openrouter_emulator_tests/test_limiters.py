"""The account-wide limiters (`limiters`): fixed windows, a token bucket and a sliding log.

Pure units with an explicit `now` for each (the budget as its definition says, refused requests taking
nothing, the reset instant and `Retry-After`, a burst then a steady refill for the bucket, rate 0 = off),
Hypothesis properties over arbitrary arrival times, and one test per limiter over real HTTP: chosen through
the control API (a bad name refused), a burst above the budget meets 429s with the `X-RateLimit-*` headers.

The properties use whole windows and arrival times on a quarter-second grid, so window edges land exactly on
arrivals and no float rounding blurs "leaves the window at `a + window_s`".
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence

import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from openrouter_emulator.faults import AccountLimiter as AccountLimiterFromFaults
from openrouter_emulator.limiters import (
    BUCKET_TOLERANCE_S,
    FIXED,
    LIMITER_KINDS,
    SLIDING,
    TOKEN_BUCKET,
    AccountLimiter,
    Refusal,
    RequestLimiter,
    SlidingLogLimiter,
    TokenBucketLimiter,
    epoch_ms_up,
    make_limiter,
)
from openrouter_emulator.process import EmulatorControlError, EmulatorProcess, run_emulator
from openrouter_emulator_tests.support import SpecValidator, call, yesterday

# The same 300 examples every run (derandomized: a failure replays), no per-example deadline (a slow machine is
# no failure) and no example database left in the working tree.
properties = settings(derandomize=True, max_examples=300, deadline=None, database=None)
budgets = st.integers(1, 6)
windows = st.integers(1, 40)  # seconds
arrivals = st.lists(st.integers(0, 800).map(lambda quarter: quarter / 4), min_size=1, max_size=120).map(sorted)


def run(limiter: RequestLimiter, times: Sequence[float]) -> list[Refusal | None]:
    return [limiter.acquire(t) for t in times]


def accepted(times: Sequence[float], outcomes: Sequence[Refusal | None]) -> list[float]:
    return [t for t, outcome in zip(times, outcomes, strict=True) if outcome is None]


# --- one interface, one factory, rate 0 = off -------------------------------------------------------------


def test_the_factory_makes_each_kind_with_one_budget_and_refuses_other_names() -> None:
    assert LIMITER_KINDS == ("fixed", "token-bucket", "sliding")
    assert [type(make_limiter(kind, 1, 1)) for kind in LIMITER_KINDS] == \
        [AccountLimiter, TokenBucketLimiter, SlidingLogLimiter]
    assert AccountLimiterFromFaults is AccountLimiter  # the old import still works
    for kind in LIMITER_KINDS:  # budget = max(1, round(rps * window)): a burst of one window
        assert (make_limiter(kind, 20, 2).budget, make_limiter(kind, 0.01, 1).budget) == (40, 1)
    for bad in ("leaky", "", "Fixed", None):
        with pytest.raises(ValueError, match="rate_limiter must be one of fixed, token-bucket, sliding"):
            make_limiter(bad, 1, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_rate_zero_switches_every_limiter_off(kind: str) -> None:
    limiter = make_limiter(kind, 0, 1.0)
    assert run(limiter, [5.0] * 1000) == [None] * 1000
    limiter.rps = 2  # switched on in place (POST /_emulator/config {"rate_limit_rps": 2}): a budget of 2
    assert [outcome is None for outcome in run(limiter, [6.0] * 3)] == [True, True, False]
    limiter.rps = 0
    assert run(limiter, [6.0] * 50) == [None] * 50


# --- fixed windows ------------------------------------------------------------------------------------------


def test_fixed_windows_are_aligned_to_the_epoch_and_refusals_take_nothing() -> None:
    limiter = AccountLimiter(rps=2, window_s=1.5)  # a budget of 3 per window: [3.0, 4.5), [4.5, 6.0), ...
    assert run(limiter, [3.0, 3.1, 3.2]) == [None] * 3
    assert limiter.acquire(3.3) == Refusal(3, 4500, 2)  # reset at the window's end; Retry-After ceil(1.2 s)
    assert run(limiter, [4.0] * 10 + [4.4]) == [Refusal(3, 4500, 1)] * 11  # never below 1 s
    assert run(limiter, [4.5, 4.6, 5.9, 5.95]) == [None, None, None, Refusal(3, 6000, 1)]  # a whole budget again


@properties
@given(budgets, windows, arrivals)
def test_fixed_windows_accept_exactly_the_first_budget_of_each_window(budget: int, window: int,
                                                                       times: list[float]) -> None:
    outcomes = run(AccountLimiter(budget / window, window), times)
    by_window: dict[int, list[Refusal | None]] = defaultdict(list)
    for t, outcome in zip(times, outcomes, strict=True):
        by_window[math.floor(t / window)].append(outcome)
        if outcome is not None:
            end = (math.floor(t / window) + 1) * window
            assert outcome == Refusal(budget, end * 1000, max(1, math.ceil(end - t)))
    for decisions in by_window.values():
        fits = min(budget, len(decisions))
        assert [d is None for d in decisions] == [True] * fits + [False] * (len(decisions) - fits)


# --- token bucket -------------------------------------------------------------------------------------------


def test_a_token_bucket_bursts_its_capacity_then_refills_at_the_rate() -> None:
    bucket = TokenBucketLimiter(rps=2, window_s=2)  # 4 tokens, one back every 0.5 s
    assert run(bucket, [100.0] * 4) == [None] * 4  # full at first: a burst of one window
    assert bucket.acquire(100.0) == Refusal(4, 100_500, 1)  # one whole token at 100.5
    assert run(bucket, [100.1] * 20 + [100.49]) == [Refusal(4, 100_500, 1)] * 21  # refusals take no token
    assert run(bucket, [100.5, 100.5]) == [None, Refusal(4, 101_000, 1)]
    # Steady: one request per token interval always fits; twice as fast, every other one is refused.
    assert run(bucket, [101.0 + k / 2 for k in range(20)]) == [None] * 20
    assert [o is None for o in run(bucket, [111.0 + k / 4 for k in range(40)])] == [True, False] * 20
    # Idle for a minute: full again, but no fuller than its capacity.
    assert [o is None for o in run(bucket, [200.0] * 6)] == [True] * 4 + [False] * 2


def test_a_token_bucket_reset_is_the_next_whole_token_rounded_up_to_the_ms() -> None:
    slow = TokenBucketLimiter(rps=0.1, window_s=10)  # one token, back after 10 s
    assert slow.acquire(1000.0) is None
    assert slow.acquire(1000.5) == Refusal(1, 1_010_000, 10)  # Retry-After ceil(9.5 s)
    assert slow.acquire(1009.2) == Refusal(1, 1_010_000, 1)
    thirds = TokenBucketLimiter(rps=3, window_s=1)  # 3 tokens, one back every 1/3 s
    assert run(thirds, [50.0] * 3) == [None] * 3
    assert thirds.acquire(50.0) == Refusal(3, 50_334, 1)  # 50.3333... s, rounded up
    assert thirds.acquire(50.334) is None  # a retry at X-RateLimit-Reset fits


@properties
@given(budgets, windows, arrivals)
def test_a_token_bucket_accepts_at_most_its_capacity_plus_the_refill(budget: int, window: int,
                                                                     times: list[float]) -> None:
    rps = budget / window
    ok = accepted(times, run(TokenBucketLimiter(rps, window), times))
    for i, first in enumerate(ok):
        for j in range(i, len(ok)):
            # (+ the microsecond the bucket allows for float rounding: far below one token)
            assert j - i + 1 <= budget + rps * (ok[j] - first + 2 * BUCKET_TOLERANCE_S), (ok[i:j + 1], budget, rps)


# --- sliding log --------------------------------------------------------------------------------------------


def test_a_sliding_log_counts_the_trailing_window_and_resets_when_the_oldest_leaves() -> None:
    log = SlidingLogLimiter(rps=1, window_s=3)  # 3 requests in any 3 s
    assert run(log, [0.0, 1.0, 2.0]) == [None] * 3
    assert log.acquire(2.5) == Refusal(3, 3000, 1)  # the one at 0.0 leaves at 3.0
    assert run(log, [3.0, 3.0, 3.5]) == [None, Refusal(3, 4000, 1), Refusal(3, 4000, 1)]
    assert run(log, [4.0, 4.9, 5.0]) == [None, Refusal(3, 5000, 1), None]  # refusals were not logged
    slow = SlidingLogLimiter(rps=0.1, window_s=10)
    assert (slow.acquire(7.0004), slow.acquire(7.5)) == (None, Refusal(1, 17_001, 10))  # ms rounded up


def test_only_fixed_windows_give_two_budgets_to_a_burst_across_a_boundary() -> None:
    times = [0.9] * 3 + [1.0] * 3  # budget 3 per second, a burst straddling the epoch second 1.0
    fits = {kind: len(accepted(times, run(make_limiter(kind, 3, 1), times))) for kind in LIMITER_KINDS}
    assert fits == {FIXED: 6, TOKEN_BUCKET: 3, SLIDING: 3}


@properties
@given(budgets, windows, arrivals)
def test_a_sliding_log_holds_its_budget_in_any_trailing_window_and_refuses_only_when_full(
        budget: int, window: int, times: list[float]) -> None:
    outcomes = run(SlidingLogLimiter(budget / window, window), times)
    ok = accepted(times, outcomes)
    for t, outcome in zip(times, outcomes, strict=True):
        trailing = [a for a in ok if a <= t < a + window]  # accepted in (t - window, t]
        if outcome is None:
            assert len(trailing) <= budget
        else:
            assert len(trailing) == budget
            oldest_leaves = min(trailing) + window
            assert outcome == Refusal(budget, epoch_ms_up(oldest_leaves), max(1, math.ceil(oldest_leaves - t)))


# --- all three ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LIMITER_KINDS)
@properties
@given(budget=budgets, window=windows, times=arrivals, repeats=st.integers(1, 4))
def test_refused_requests_take_nothing(kind: str, budget: int, window: int, times: list[float],
                                       repeats: int) -> None:
    """A client hammering through its 429s changes nothing: repeating every refused request at once gets the
    same refusal, and every later request the answer it would have had."""
    quiet = run(make_limiter(kind, budget / window, window), times)
    limiter = make_limiter(kind, budget / window, window)
    hammered = []
    for t in times:
        outcome = limiter.acquire(t)
        hammered.append(outcome)
        if outcome is not None:
            assert [limiter.acquire(t) for _ in range(repeats)] == [outcome] * repeats
    assert hammered == quiet


@pytest.mark.parametrize("kind", [TOKEN_BUCKET, SLIDING])
@properties
@given(budget=budgets, window=windows, times=arrivals)
@example(budget=3, window=1, times=[0.0] * 4)  # a token every 1/3 s: a reset between two milliseconds
def test_a_retry_at_the_reset_fits_and_a_millisecond_earlier_does_not(kind: str, budget: int, window: int,
                                                                      times: list[float]) -> None:
    limiter = make_limiter(kind, budget / window, window)
    for t in times:
        refusal = limiter.acquire(t)
        if refusal is None:
            continue
        reset_s = refusal.reset_epoch_ms / 1000
        assert reset_s > t and refusal.retry_after_s == max(1, math.ceil(reset_s - t - 1e-6))
        assert copy.deepcopy(limiter).acquire(reset_s) is None
        early_s = (refusal.reset_epoch_ms - 1) / 1000
        if early_s >= t:
            assert copy.deepcopy(limiter).acquire(early_s) is not None


# --- over real HTTP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("limiters") / "emulator.log"
    with run_emulator(seed=3, generations_per_day=20, days=1, log_path=log,
                      extra_args=["--analytics-rpm", "0", "--rate-limiter", SLIDING]) as process:
        yield process


@pytest.mark.parametrize("kind", LIMITER_KINDS)
def test_the_chosen_limiter_answers_a_burst_over_its_budget_with_429s(server: EmulatorProcess, spec: SpecValidator,
                                                                      kind: str) -> None:
    budget, window = 5, 1e9  # 5 requests per 31 years: no window ends, no token comes back, none leaves the log
    gen_id = server.truth(yesterday())["ids"][0]
    initial = server.config()
    assert initial["rate_limiter"] == SLIDING and initial["rate_limit_rps"] == 0  # the flag's, and off
    for bad in (kind.upper(), "leaky-bucket", 1):
        with pytest.raises(EmulatorControlError) as refused:
            server.configure(rate_limiter=bad, rate_limit_rps=budget / window)
        assert refused.value.status == 400 and "rate_limiter" in str(refused.value)
    assert server.config() == initial  # all or nothing
    try:
        config = server.configure(rate_limiter=kind, rate_limit_rps=budget / window, rate_limit_window_s=window,
                                  retry_after_share=1.0)
        assert config["rate_limiter"] == kind
        server.reset_stats()
        answers, stamps = [], []
        with requests.Session() as session:
            for _ in range(budget + 4):
                sent = time.time()
                answers.append(call(server, "GET", "/generation", params={"id": gen_id}, session=session))
                stamps.append((sent, time.time()))
        assert [r.status_code for r in answers] == [200] * budget + [429] * 4
        # Where each limiter puts the reset. The server stamped the first request between the client's stamps
        # around it (one clock), so the bounds hold however slow the machine (1 ms: float sums at epoch scale).
        first_sent, first_answered = stamps[0]
        after_first = {FIXED: None, TOKEN_BUCKET: window / budget, SLIDING: window}[kind]
        reset_ms = int(answers[budget].headers["X-RateLimit-Reset"])
        if after_first is None:
            assert reset_ms == (math.floor(first_sent / window) + 1) * window * 1000  # the epoch-aligned window's end
        else:
            earliest, latest = (epoch_ms_up(stamp + after_first) for stamp in (first_sent, first_answered))
            assert earliest - 1 <= reset_ms <= latest + 1
        for response, (sent, answered) in zip(answers[budget:], stamps[budget:], strict=True):
            body = spec.check("/generation", "get", response)
            assert body["error"] == {"message": "Rate limit exceeded", "code": 429, "metadata": {
                "headers": {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(reset_ms)}, "provider_name": None}}
            assert {k: v for k, v in response.headers.items() if k.startswith("X-RateLimit")} == \
                body["error"]["metadata"]["headers"]  # the same reset for every refusal: they took nothing
            retry_after = int(response.headers["Retry-After"])  # retry_after_share 1: on every one
            assert reset_ms / 1000 - answered - 0.002 < retry_after <= reset_ms / 1000 - sent + 1.001
        stats = server.stats()
        assert stats["rate_limited"] == 4 == stats["by_status"]["429"]
        server.configure(html_error_share=1.0)  # another setting: the limiter keeps its state (still spent)...
        page = call(server, "GET", "/generation", params={"id": gen_id})
        assert page.status_code == 429 and page.headers["Content-Type"].startswith("text/html")
        assert "Error 1015" in page.text and not [h for h in page.headers if h.lower().startswith("x-ratelimit")]
        server.configure(rate_limiter=kind, html_error_share=0.0)  # ...naming the limiter starts it afresh
        with requests.Session() as session:
            again = [call(server, "GET", "/generation", params={"id": gen_id}, session=session).status_code
                     for _ in range(budget + 1)]
        assert again == [200] * budget + [429]
        assert server.stats()["rate_limited"] == 6
    finally:
        server.reset_config()
