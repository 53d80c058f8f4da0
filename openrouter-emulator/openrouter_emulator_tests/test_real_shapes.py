"""The emulator's default (live-shaped) answers against the bodies the live API really sent.

For every kind with real bodies in `shared/openrouter/real-payloads/` (`GET /generation`, `GET /activity`,
the `/generation` 404, 429s, the 401 without a key, the 403 of `/activity`), a real emulator process,
asked over real HTTP with its default flags, must answer with no key the real bodies lack, every key all
complete real bodies have, and the JSON types they show (int and float apart). Partial bodies and the
dashboard's records (not API answers) only widen what is known to exist; they require nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from openrouter_emulator.process import EmulatorProcess, run_emulator
from openrouter_emulator_tests.shapes import Reference, real_payload, real_payload_files
from openrouter_emulator_tests.support import call, yesterday

ID_PATTERN = re.compile(r"^gen-\d{10}-[A-Za-z0-9]{20}$")
MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACTIVITY_DATE = re.compile(r"^\d{4}-\d\d-\d\d 00:00:00$")
# Fields the spec requires that a quarter of live bodies lack, as the 2026-02 body (generation/01) does.
SOMETIMES_ABSENT = {"service_tier", "num_fetches", "web_search_engine", "preset_id", "user_agent", "http_referer",
                    "data_region"}
ATTEMPTS = "$.data.provider_responses[]"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator with its default flags: live shapes, no hostility."""
    log = tmp_path_factory.mktemp("real-shapes") / "emulator.log"
    with run_emulator(seed=13, generations_per_day=1200, days=1, log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def records(live: EmulatorProcess) -> list[dict[str, Any]]:
    """Every generation of yesterday, as `GET /generation` answers it (1,200 bodies)."""
    assert live.config()["shapes"] == "live"  # the default
    with requests.Session() as session:
        answers = [call(live, "GET", "/generation", params={"id": i}, session=session)
                   for i in live.truth(yesterday())["ids"]]
    assert {a.status_code for a in answers} == {200}
    return [a.json() for a in answers]


def generation_bodies() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Real `GET /generation` bodies (files wrapped in `data`; the dashboard's records are not), by file
    name, and the complete ones among them (not marked partial)."""
    bodies = {path.name: real_payload(f"generation/{path.name}") for path in real_payload_files("generation")}
    api = {name: body for name, body in bodies.items() if isinstance(body, dict) and set(body) == {"data"}}
    complete = [body for name, body in api.items() if "partial" not in name]
    assert len(api) >= 7 and len(complete) >= 4, sorted(api)
    return api, complete


def newest(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    return max(bodies, key=lambda b: b["data"]["created_at"])


def test_generation_bodies_have_the_real_keys_and_types(records: list[dict[str, Any]]) -> None:
    real, complete = generation_bodies()
    reference = Reference.of(real.values(), complete)
    problems: Counter[str] = Counter()
    for record in records:
        problems.update(reference.problems(record, excused={ATTEMPTS: {"id"}}))  # the id: checked below
    assert not problems, problems.most_common()
    # The newest complete body's keys, in its order; a quarter lack what the 2026-02 body lacks too.
    full = list(newest(complete)["data"])
    assert "workspace_id" not in full and len(full) == 44
    key_lists = Counter(tuple(r["data"]) for r in records)
    short = tuple(k for k in full if k not in SOMETIMES_ABSENT)
    assert set(key_lists) == {tuple(full), short}
    assert 0.15 < key_lists[short] / len(records) < 0.40, key_lists[short]
    february = real["01-llama4scout-deepinfra-cancelled-2026-02-24.json"]["data"]
    assert set(february) <= set(short) and not SOMETIMES_ABSENT & set(february)


def test_generation_values_are_written_as_live(live: EmulatorProcess, records: list[dict[str, Any]]) -> None:
    real, _ = generation_bodies()
    datas = [b["data"] for b in real.values()]
    # What the real bodies show (so the reference is what this test takes it for)...
    assert all(d["model"] == d["provider_responses"][-1]["model_permaslug"] for d in datas
               if "model" in d and d.get("provider_responses"))
    assert all(MS_Z.match(d["created_at"]) for d in datas if d.get("created_at", "").startswith("2026"))
    assert all(ID_PATTERN.match(d["id"]) for d in datas if "id" in d and "#" not in d["id"])
    assert {json_repr(d["upstream_inference_cost"]) for d in datas if "upstream_inference_cost" in d} == {"int 0"}
    assert all(d["origin"] == "" for d in datas if "origin" in d and d.get("app_id", 0) is None)
    # ...the emulator answers alike.
    data = [r["data"] for r in records]
    for d in data:
        assert ID_PATTERN.match(d["id"]) and MS_Z.match(d["created_at"]), d["id"]
        assert d["model"] == d["provider_responses"][-1]["model_permaslug"]
        if not d["is_byok"]:
            assert json_repr(d["upstream_inference_cost"]) == "int 0"
        if d["app_id"] is None:
            assert d["origin"] == ""
        assert all(isinstance(a["latency"], int) for a in d["provider_responses"])
    cancelled_streams = [d for d in data if d["cancelled"] and d["streamed"]]
    assert cancelled_streams and all(d["finish_reason"] is None is d["native_finish_reason"]
                                     for d in cancelled_streams)
    byok = [d for d in data if d["is_byok"]]
    assert byok and all(isinstance(d["upstream_inference_cost"], float) for d in byok)
    # `model` is the permaslug; several are dated and differ from the slug (claude-4.5-haiku-20251001 live).
    catalogue = live.truth(yesterday())["models"]
    dated = {m["permaslug"] for m in catalogue if m["permaslug"] != m["slug"]}
    assert len(dated) >= 5 and dated <= {d["model"] for d in data} <= {m["permaslug"] for m in catalogue}


def test_fallback_attempts_come_without_an_id(records: list[dict[str, Any]]) -> None:
    real, complete = generation_bodies()
    [gemini] = [b["data"] for name, b in real.items() if name.startswith("03-")]
    assert [a["status"] for a in gemini["provider_responses"]] == [429, 200]
    assert "id" not in gemini["provider_responses"][0]  # the failed attempt
    answered = Reference.of([], complete).required[ATTEMPTS]
    attempts = [a for r in records for a in r["data"]["provider_responses"]]
    failed = [a for a in attempts if a["status"] != 200]
    assert failed and all(set(a) == set(gemini["provider_responses"][0]) for a in failed)
    assert all(set(a) == answered for a in attempts if a["status"] == 200)
    assert "id" in answered


def test_activity_rows_have_the_real_keys_and_types(live: EmulatorProcess) -> None:
    [path] = real_payload_files("activity")
    body = real_payload(f"activity/{path.name}")
    reference = Reference.of([body], [body])
    day = yesterday().isoformat()
    for params, extra in (({"date": day}, {"cached_tokens"}),  # the official SDK requires cached_tokens
                          ({"date": day, "group_by": "workspace"}, {"cached_tokens", "workspace_id"})):
        answer = call(live, "GET", "/activity", params=params)
        assert answer.status_code == 200
        rows = answer.json()["data"]
        assert len(rows) > 10
        assert reference.problems(answer.json(), extra={"$.data[]": extra}) == set()
        assert all(ACTIVITY_DATE.match(r["date"]) and r["date"] == f"{day} 00:00:00" for r in rows)
        assert all(set(r) == set(body["data"][0]) | extra for r in rows)
    assert all(ACTIVITY_DATE.match(r["date"]) for r in body["data"])


def error_reference(*names: str, partial: tuple[str, ...] = ()) -> Reference:
    bodies = [real_payload(f"errors/{n}") for n in names]
    inner = [{"error": real_payload(f"errors/{n}")} for n in partial]  # logged without the wrapper
    return Reference.of(bodies + inner, bodies)


def test_the_generation_404_is_the_real_one(live: EmulatorProcess) -> None:
    real = real_payload("errors/01-generation-not-found-404-2026-06-25.json")
    reference = error_reference("01-generation-not-found-404-2026-06-25.json")
    unknown = "gen-1700000000-AAAAAAAAAAAAAAAAAAAA"
    lagging = live.truth(yesterday())["ids"][0]
    live.configure(first_404_share=1.0)
    try:
        answers = {unknown: call(live, "GET", "/generation", params={"id": unknown}),
                   lagging: call(live, "GET", "/generation", params={"id": lagging})}
    finally:
        live.reset_config()
    for gen_id, answer in answers.items():
        assert answer.status_code == 404 and reference.problems(answer.json()) == set()
        assert answer.json() == {"error": {"message": f"Generation {gen_id} not found", "code": 404}}
        assert not [h for h in answer.headers if h.lower().startswith("x-ratelimit")]
    assert re.fullmatch(r"Generation gen-\S+ not found", real["error"]["message"])


def test_429s_have_the_real_keys_and_types(live: EmulatorProcess) -> None:
    reference = error_reference("06-chat-429-free-models-per-day-2026-05-20.json",
                                "07-chat-429-limit-rpd-google-ai-studio-2025-04-02.json",
                                "09-chat-429-free-models-per-day-high-balance-2026-08-08.json",
                                partial=("08-chat-429-limit-rpm-shared-free-2026-07-08.inner-error-object.json",))
    assert reference.required["$.error.metadata"] == {"headers"}
    gen_id = live.truth(yesterday())["ids"][0]
    try:
        live.configure(throttle_share=1.0)
        lone = call(live, "GET", "/generation", params={"id": gen_id})
        live.configure(throttle_share=0.0, rate_limit_rps=1 / 3600, rate_limit_window_s=3600)
        limited = [call(live, "GET", "/generation", params={"id": gen_id}) for _ in range(3)]
    finally:
        live.reset_config()
    assert 429 in [r.status_code for r in limited]  # a budget of one request an hour
    refused = next(r for r in limited if r.status_code == 429)
    assert reference.problems(refused.json()) == set()
    metadata = refused.json()["error"]["metadata"]
    assert metadata["headers"] == {k: refused.headers[k] for k in metadata["headers"]}  # strings, as the header
    assert set(metadata["headers"]) == {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    # A lone 429 is no limiter's: it has no budget to report, in the body or the headers.
    assert lone.status_code == 429 and lone.headers["Retry-After"] == "1"
    assert reference.problems(lone.json(), excused={"$.error.metadata": {"headers"}}) == set()
    assert "headers" not in lone.json()["error"]["metadata"] and lone.json()["user_id"].startswith("user_")


def test_the_401_and_403_are_the_real_ones(live: EmulatorProcess) -> None:
    no_key = call(live, "GET", "/generation", key=None, params={"id": "gen-1700000000-AAAAAAAAAAAAAAAAAAAA"})
    assert no_key.status_code == 401 and no_key.json() == real_payload("errors/12-401-no-auth-credentials.json")
    inference = call(live, "GET", "/activity", key="inference")
    assert inference.status_code == 403
    assert inference.json() == real_payload("errors/05-activity-403-non-management-key.json")
    assert list(inference.json()["error"]) == ["message", "code"]  # the published key order


def json_repr(value: Any) -> str:
    return f"{type(value).__name__} {value}"
