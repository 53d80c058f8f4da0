"""The fault knobs a capture benchmark turns: lone 429s, the statuses random faults draw from, lagging records.

Each is a flag and a runtime key; these tests switch them over `/_emulator/config` on one emulator process
and count what came back over real HTTP (the draws are seeded, the bounds are binomial ones of more than
four standard deviations, so they can fail only when the knob does not do what it says).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from openrouter_emulator.process import EmulatorControlError, EmulatorProcess, run_emulator
from openrouter_emulator_tests.support import OWNER, SpecValidator, call, yesterday


@pytest.fixture(scope="module")
def knobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("knobs") / "emulator.log"
    with run_emulator(seed=31, generations_per_day=600, days=1, log_path=log) as server:
        yield server


@pytest.fixture
def emu(knobs: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The module's emulator, its settings back to the command line's after each test."""
    knobs.reset_stats()
    yield knobs
    knobs.reset_config()


@pytest.fixture(scope="module")
def ids(knobs: EmulatorProcess) -> list[str]:
    found = knobs.truth(yesterday())["ids"]
    assert len(found) >= 400
    return found[:400]


def gets(server: EmulatorProcess, ids: list[str], key: str = "management") -> list[requests.Response]:
    with requests.Session() as session:
        return [call(server, "GET", "/generation", params={"id": i}, key=key, session=session) for i in ids]


def rate_limit_headers(response: requests.Response) -> list[str]:
    return [h for h in response.headers if h.lower().startswith("x-ratelimit")]


def test_throttle_share_answers_lone_429s(emu: EmulatorProcess, ids: list[str], spec: SpecValidator) -> None:
    emu.configure(throttle_share=0.3)
    answers = gets(emu, ids)
    limited = [r for r in answers if r.status_code == 429]
    assert {r.status_code for r in answers} == {200, 429}
    assert 80 <= len(limited) <= 160, len(limited)  # 400 x 0.3 = 120, sd 9.2
    for response in limited:
        assert response.headers["Retry-After"] == "1"
        assert rate_limit_headers(response) == []  # a lone 429, not the account limiter
        body = spec.check("/generation", "get", response)
        assert body["user_id"] == OWNER
        assert body["error"]["code"] == 429 and body["error"]["message"] == "Rate limit exceeded"
        assert body["error"]["metadata"] == {"provider_name": None}  # no limiter, no X-RateLimit-* values
    stats = emu.stats()
    assert stats["throttled"] == len(limited) == stats["by_path_status"]["/generation"]["429"]
    assert stats["rate_limited"] == 0 and stats["random_faults"] == 0
    with requests.Session() as session:  # only GET /generation is throttled
        assert {call(emu, "GET", "/key", session=session).status_code for _ in range(60)} == {200}


def test_throttle_share_one_and_zero(emu: EmulatorProcess, ids: list[str]) -> None:
    emu.configure(throttle_share=1.0)
    assert {r.status_code for r in gets(emu, ids[:20], key="inference")} == {429}
    [unknown] = gets(emu, ids[:1], key="sk-or-v1-not-a-key")  # refused before auth: no account to name
    assert unknown.status_code == 429 and "user_id" not in unknown.json()
    emu.configure(throttle_share=0.0)
    assert {r.status_code for r in gets(emu, ids[:20])} == {200}
    assert emu.stats()["throttled"] == 21


def test_fault_statuses_choose_what_fault_rate_answers(emu: EmulatorProcess, ids: list[str]) -> None:
    emu.configure(fault_rate=0.2, fault_statuses=[503])
    answers = gets(emu, ids[:300])
    failed = [r for r in answers if r.status_code != 200]
    assert 30 <= len(failed) <= 90, len(failed)  # 300 x 0.2 = 60, sd 6.9
    assert {r.status_code for r in failed} == {503}
    assert all(r.headers["Retry-After"] == "1" and r.json()["error"]["code"] == 503 for r in failed)
    assert emu.stats()["random_faults"] == len(failed)
    assert emu.config()["fault_statuses"] == [503]
    emu.configure(fault_statuses="502, 524")  # the flag's spelling is accepted too
    emu.reset_stats()
    failed = [r for r in gets(emu, ids[:300]) if r.status_code != 200]
    assert {r.status_code for r in failed} == {502, 524} and 30 <= len(failed) <= 90
    assert emu.stats()["random_faults"] == len(failed)


def test_fault_statuses_default_and_refusals(emu: EmulatorProcess) -> None:
    assert emu.config()["fault_statuses"] == [500, 502, 503, 524, 529]
    for bad in ([], [200], [503, 600], "abc", "", True, 503, [True]):
        with pytest.raises(EmulatorControlError) as refused:
            emu.configure(fault_statuses=bad)
        assert refused.value.status == 400 and "fault_statuses" in str(refused.value)
    for bad_share in (1.5, -0.1, "0.5"):
        for key in ("throttle_share", "first_404_share"):
            with pytest.raises(EmulatorControlError):
                emu.configure(**{key: bad_share})
    assert emu.config()["fault_statuses"] == [500, 502, 503, 524, 529]


def test_first_404_share_makes_the_first_get_of_some_ids_404(emu: EmulatorProcess, ids: list[str],
                                                             spec: SpecValidator) -> None:
    emu.configure(first_404_share=0.25)
    first = gets(emu, ids)
    lagging = [i for i, r in zip(ids, first, strict=True) if r.status_code == 404]
    assert {r.status_code for r in first} == {200, 404}
    assert 60 <= len(lagging) <= 140, len(lagging)  # 400 x 0.25 = 100, sd 8.7
    for gen_id, response in zip(ids, first, strict=True):
        if response.status_code == 404:
            body = spec.check("/generation", "get", response)
            assert body == {"error": {"message": f"Generation {gen_id} not found", "code": 404}}
            assert rate_limit_headers(response) == []
    assert {r.status_code for r in gets(emu, lagging)} == {200}  # later GETs answer the record
    assert {r.status_code for r in gets(emu, ids)} == {200}
    assert emu.stats()["first_404s"] == len(lagging)
    emu.configure(first_404_share=0.25)  # setting it again starts the first GETs over...
    backwards = gets(emu, ids[::-1])  # ...and the same ids lag, whatever the order: (seed, id) decides
    assert [i for i, r in zip(ids[::-1], backwards, strict=True) if r.status_code == 404] == lagging[::-1]
    emu.configure(first_404_share=0.0)
    assert {r.status_code for r in gets(emu, lagging)} == {200}


def test_the_new_flags_set_their_keys(tmp_path: Path) -> None:
    args = ["--throttle-share", "0.02", "--fault-rate", "0.005", "--fault-statuses", "503",
            "--first-404-share", "0.1"]
    with run_emulator(generations_per_day=10, days=1, extra_args=args, log_path=tmp_path / "flags.log") as server:
        config = server.config()
        stats = server.stats()
    assert (config["throttle_share"], config["fault_rate"], config["fault_statuses"], config["first_404_share"]) == \
        (0.02, 0.005, [503], 0.1)
    assert stats["throttled"] == stats["random_faults"] == stats["first_404s"] == 0
