"""The emulator against OpenRouter's own OpenAPI spec, over real HTTP to real emulator processes, in both shapes.

Every response (200s and errors) is validated against the spec's schema for that path, method and
status; the rest checks the behaviour clients rely on: exact ground truth, truncation, windows, keys,
identical timestamps, faults. Each test runs against `--shapes live` (the default: answers shaped like the
live API's bodies, checked against the spec with exactly the documented live absences excused) and
`--shapes spec` (the spec's example shapes, checked against the spec as it stands). (The hostile behaviours
are in `test_hostile.py`, the real bodies' shapes in `test_real_shapes.py`.)
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from openrouter_emulator.live_shapes import LIVE_ABSENT
from openrouter_emulator.process import EmulatorProcess, EmulatorStartError, run_emulator, start_emulator
from openrouter_emulator_tests.support import (
    LIVE_ABSENT_GENERATION_FIELDS,
    SpecValidator,
    call,
    control,
    created_at,
    day_range,
    emulator_pair,
    iso,
    query,
    rows_of,
    today,
    yesterday,
)

ID_PATTERN = re.compile(r"^gen-(\d{10})-[A-Za-z0-9]{20}$")
CREATED_PATTERN = {"spec": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$"),
                   "live": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")}


@pytest.fixture(scope="module", params=["live", "spec"])
def servers(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, EmulatorProcess]]:
    """The conftest's pair, in each of the two shapes."""
    with emulator_pair(tmp_path_factory.mktemp(f"emulators-{request.param}"), ["--shapes", request.param]) as pair:
        yield pair


@pytest.fixture(scope="module")
def shapes(servers: tuple[EmulatorProcess, EmulatorProcess]) -> str:
    """The shapes both servers answer in, as their config says."""
    return servers[0].config()["shapes"]


@pytest.fixture
def spec(spec: SpecValidator, shapes: str) -> SpecValidator:
    """The spec as it stands for spec-shaped answers; for live ones, with exactly the documented absences
    of `GenerationResponse.data` excused."""
    return spec.excusing(LIVE_ABSENT_GENERATION_FIELDS) if shapes == "live" else spec


def test_the_excused_fields_are_the_emulators_documented_live_absences() -> None:
    assert LIVE_ABSENT == LIVE_ABSENT_GENERATION_FIELDS


def truth(server: EmulatorProcess, day: dt.date) -> dict[str, Any]:
    return server.truth(day)


def slug_of(expected: dict[str, Any]) -> dict[str, str]:
    """Analytics model label -> /generation slug, from the emulator's catalogue (tests only)."""
    return {m["label"]: m["slug"] for m in expected["models"]}


# --- Shapes: every endpoint against the spec -----------------------------------------------------------


def test_analytics_generation_id_query_lists_exactly_the_day(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    body = spec.check("/analytics/query", "post", query(emu, {
        "metrics": ["request_count"], "dimensions": ["generation_id", "api_key_id"],
        "time_range": day_range(day), "limit": 10_000}))
    expected = truth(emu, day)
    rows = rows_of(body)
    assert body["data"]["metadata"]["truncated"] is False
    assert body["data"]["metadata"]["row_count"] == len(rows) == expected["count"] >= 2000
    assert sorted(r["generation_id"] for r in rows) == expected["ids"]
    assert {r["request_count"] for r in rows} == {"1"}  # counts are strings
    assert Counter(r["api_key_id"] for r in rows) == expected["by_api_key"]
    assert all(ID_PATTERN.match(r["generation_id"]) for r in rows)


def test_analytics_model_dimension_matches_truth(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    body = spec.check("/analytics/query", "post", query(emu, {
        "metrics": ["request_count", "total_usage", "avg_latency", "byok_request_count"], "dimensions": ["model"],
        "time_range": day_range(day)}))
    rows = rows_of(body)
    expected = truth(emu, day)
    assert all(isinstance(r["request_count"], str) and isinstance(r["byok_request_count"], str) for r in rows)
    assert all(isinstance(r["total_usage"], float) and isinstance(r["avg_latency"], float) for r in rows)
    slugs = slug_of(expected)  # analytics names models by label by default, as OpenRouter does
    assert {slugs[r["model"]]: int(r["request_count"]) for r in rows} == expected["by_model"]
    for row in rows:
        assert row["total_usage"] == pytest.approx(expected["by_model_cost"][slugs[row["model"]]], rel=1e-9)
    assert len(rows) >= 10 and len({r["model"].split(":")[0] for r in rows}) >= 5
    counts = [int(r["request_count"]) for r in rows]
    assert counts == sorted(counts, reverse=True)  # default order: busiest first
    assert 0 < sum(int(r["byok_request_count"]) for r in rows) < 0.06 * expected["count"]


def test_analytics_hourly_granularity_is_diurnal(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    body = spec.check("/analytics/query", "post", query(emu, {
        "metrics": ["request_count"], "granularity": "hour", "time_range": day_range(day)}))
    rows = rows_of(body)
    assert [r["date__hour"] for r in rows] == [f"{day.isoformat()}T{h:02d}:00:00.000Z" for h in range(24)]
    counts = [int(r["request_count"]) for r in rows]
    assert sum(counts) == truth(emu, day)["count"]
    assert max(counts) > 4 * min(counts)  # business-hours peak, quiet nights
    assert sum(counts[8:18]) > sum(counts) / 2


def test_truncated_at_the_requested_limit(emu: EmulatorProcess, spec: SpecValidator) -> None:
    body = spec.check("/analytics/query", "post", query(emu, {
        "metrics": ["request_count"], "dimensions": ["generation_id"], "time_range": day_range(yesterday()),
        "limit": 100}))
    assert body["data"]["metadata"] == {**body["data"]["metadata"], "row_count": 100, "truncated": True}
    assert len(rows_of(body)) == 100


def test_server_cap_truncates_below_the_requested_limit(capped: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    body = spec.check("/analytics/query", "post", query(capped, {
        "metrics": ["request_count"], "dimensions": ["generation_id"], "time_range": day_range(day),
        "limit": 10_000}))
    assert body["data"]["metadata"]["row_count"] == len(rows_of(body)) == 500
    assert body["data"]["metadata"]["truncated"] is True
    night = dt.datetime(day.year, day.month, day.day, 2, tzinfo=dt.UTC)  # a quiet hour: < 500 rows
    small = query(capped, {"metrics": ["request_count"], "dimensions": ["generation_id"], "limit": 10_000,
                           "time_range": {"start": iso(night), "end": iso(night + dt.timedelta(hours=1))}}).json()
    assert 0 < small["data"]["metadata"]["row_count"] < 500 and small["data"]["metadata"]["truncated"] is False


def test_time_range_is_half_open_to_the_microsecond(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    first = rows_of(query(emu, {"metrics": ["request_count"], "dimensions": ["generation_id"], "limit": 1,
                                "time_range": day_range(day)}).json())[0]["generation_id"]
    record = call(emu, "GET", "/generation", params={"id": first}).json()["data"]
    created = dt.datetime.fromisoformat(record["created_at"])
    tick = dt.timedelta(microseconds=1)

    def ids(start: dt.datetime, end: dt.datetime) -> set[str]:
        body = spec.check("/analytics/query", "post", query(emu, {
            "metrics": ["request_count"], "dimensions": ["generation_id"],
            "time_range": {"start": iso(start), "end": iso(end)}}))
        return {r["generation_id"] for r in rows_of(body)}

    assert first in ids(created, created + tick)
    assert first not in ids(created - dt.timedelta(seconds=1), created)
    assert first not in ids(created + tick, created + dt.timedelta(seconds=1))


def test_analytics_meta(emu: EmulatorProcess, spec: SpecValidator) -> None:
    body = spec.check("/analytics/meta", "get", call(emu, "GET", "/analytics/meta"))["data"]
    names = {m["name"] for m in body["metrics"]}
    assert {"request_count", "total_usage", "tokens_prompt", "tokens_completion", "reasoning_tokens",
            "cached_tokens", "avg_latency", "byok_request_count"} <= names
    documented = {"request_count", "tokens_total", "tokens_prompt", "tokens_completion", "reasoning_tokens",
                  "cached_tokens", "byok_request_count", "total_usage", "byok_usage", "credits_usage",
                  "openrouter_usage", "usage_upstream", "usage_cache", "avg_latency"}
    assert names <= documented and "total_cost" not in names  # only metrics OpenRouter documents
    assert {"generation_id", "model", "provider", "api_key_id", "external_user", "finish_reason", "origin", "app",
            "user", "workspace"} == {d["name"] for d in body["dimensions"]}
    assert {g["name"] for g in body["granularities"]} == {"minute", "hour", "day", "week", "month"}
    assert {o["name"]: o["value_type"] for o in body["operators"]}["not_in"] == "array"


def test_generation_records_have_their_fields_and_parse(emu: EmulatorProcess, spec: SpecValidator,
                                                        shapes: str) -> None:
    """Spec-shaped: all 45 fields, the slug, µs `+00:00`. Live: the 44 a 2026-06 body has or the 37 of a
    2026-02 one (never `workspace_id`), the dated permaslug, ms `Z`, integer latencies."""
    day = yesterday()
    expected = truth(emu, day)
    ids = expected["ids"]
    fields = set(spec.spec["components"]["schemas"]["GenerationResponse"]["properties"]["data"]["properties"])
    assert len(fields) == 45
    permaslug = {m["slug"]: m["permaslug"] for m in expected["models"]}
    key_sets = Counter[frozenset[str]]()
    for gen_id in ids[:: len(ids) // 60]:
        data = spec.check("/generation", "get", call(emu, "GET", "/generation", params={"id": gen_id},
                                                     key="inference"))["data"]
        key_sets[frozenset(data)] += 1
        assert data["id"] == gen_id and CREATED_PATTERN[shapes].match(data["created_at"])
        created = created_at(data)
        assert created.date() == day and created.microsecond % 1000 == 0  # whole ms, whichever the shapes
        assert int(ID_PATTERN.match(gen_id).group(1)) == int(created.timestamp())
        assert data["usage"] == data["total_cost"] >= 0
        served = data["provider_responses"][-1]["model_permaslug"]
        if shapes == "live":
            assert data["model"] == served and data["model"] in permaslug.values()
            assert all(isinstance(data[f], int) for f in ("latency", "generation_time"))
        else:
            assert permaslug[data["model"]] == served
            assert all(isinstance(data[f], float) for f in ("latency", "generation_time"))
    if shapes == "spec":
        assert set(key_sets) == {frozenset(fields)}
    else:
        short = frozenset(fields - LIVE_ABSENT_GENERATION_FIELDS)
        assert set(key_sets) == {frozenset(fields - {"workspace_id"}), short}
        assert 0.1 < key_sets[short] / key_sets.total() < 0.45


def test_generation_errors(emu: EmulatorProcess, spec: SpecValidator) -> None:
    unknown_id = "gen-1700000000-AAAAAAAAAAAAAAAAAAAA"
    unknown = call(emu, "GET", "/generation", params={"id": unknown_id})
    assert spec.check("/generation", "get", unknown) == {  # as real-payloads/errors/01
        "error": {"message": f"Generation {unknown_id} not found", "code": 404}}
    found = call(emu, "GET", "/generation", params={"id": truth(emu, yesterday())["ids"][0]})
    for answer in (unknown, found):  # no rate-limit headers on /generation's 200s and 404s (errors/01, 02)
        assert answer.status_code in (200, 404) and not [h for h in answer.headers if h.lower().startswith("x-ratel")]
    assert spec.check("/generation", "get", call(emu, "GET", "/generation", params={"id": "nope"})).get("error")
    missing = call(emu, "GET", "/generation")
    assert missing.status_code == 400
    assert "id" in spec.check("/generation", "get", missing, fallback=True)["error"]["message"]


def test_there_is_no_generations_list(emu: EmulatorProcess, spec: SpecValidator) -> None:
    assert "/generations" not in spec.spec["paths"]
    for method in ("GET", "POST"):
        response = call(emu, method, "/generations", params={"date": yesterday().isoformat()})
        assert response.status_code == 404
        assert spec.check("/generations", method.lower(), response, fallback=True)["error"]["code"] == 404
    assert call(emu, "GET", "/no-such-endpoint").status_code == 404


def activity_date(day: dt.date, shapes: str) -> str:
    return f"{day.isoformat()} 00:00:00" if shapes == "live" else day.isoformat()


def test_activity_shape_and_totals_agree_with_analytics_and_truth(emu: EmulatorProcess, spec: SpecValidator,
                                                                 shapes: str) -> None:
    day = yesterday()
    items = spec.check("/activity", "get", call(emu, "GET", "/activity", params={"date": day.isoformat()}))["data"]
    expected = truth(emu, day)
    assert {i["date"] for i in items} == {activity_date(day, shapes)}
    assert len({(i["model"], i["endpoint_id"]) for i in items}) == len(items) > len(expected["by_model"])
    by_model = Counter[str]()
    for item in items:
        by_model[item["model"]] += item["requests"]
    assert dict(by_model) == expected["by_model"]
    metrics = ["request_count", "total_usage", "tokens_prompt", "tokens_completion", "reasoning_tokens"]
    [total] = rows_of(query(emu, {"metrics": metrics, "time_range": day_range(day)}).json())
    assert int(total["request_count"]) == sum(i["requests"] for i in items) == expected["count"]
    assert total["total_usage"] == pytest.approx(sum(i["usage"] for i in items), rel=1e-9)
    assert total["total_usage"] == pytest.approx(expected["cost"], rel=1e-9)
    assert int(total["tokens_prompt"]) == sum(i["prompt_tokens"] for i in items)
    assert int(total["tokens_completion"]) == sum(i["completion_tokens"] for i in items)
    assert int(total["reasoning_tokens"]) == sum(i["reasoning_tokens"] for i in items) > 0
    assert sum(i["byok_usage_inference"] for i in items) > 0
    everything = spec.check("/activity", "get", call(emu, "GET", "/activity"))["data"]
    assert {i["date"] for i in everything} == {activity_date(today() - dt.timedelta(days=k), shapes)
                                               for k in (1, 2, 3)}
    live_only = {"cached_tokens", "byok_requests"}
    if shapes == "spec":
        assert all(not live_only & set(i) for i in items)
        return
    [extra] = rows_of(query(emu, {"metrics": ["cached_tokens", "byok_request_count"],
                                  "time_range": day_range(day)}).json())
    assert sum(i["cached_tokens"] for i in items) == int(extra["cached_tokens"]) > 0
    assert sum(i["byok_requests"] for i in items) == int(extra["byok_request_count"]) > 0
    assert all(list(i)[:3] == ["date", "model_permaslug", "model"] for i in items)  # the live key order


def test_key_and_credits(emu: EmulatorProcess, spec: SpecValidator) -> None:
    inference = spec.check("/key", "get", call(emu, "GET", "/key", key="inference"))["data"]
    management = spec.check("/key", "get", call(emu, "GET", "/key"))["data"]
    assert inference["is_management_key"] is False and management["is_management_key"] is True
    assert emu.inference_key not in inference["label"] and inference["label"].startswith("sk-or-v1-")
    credits_ = spec.check("/credits", "get", call(emu, "GET", "/credits"))["data"]
    assert credits_["total_credits"] > credits_["total_usage"] > 0


# --- Errors: windows, keys, bad queries, faults ---------------------------------------------------------


def test_generation_id_only_within_31_days(emu: EmulatorProcess, spec: SpecValidator) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    window = {"start": iso(start), "end": iso(start + dt.timedelta(days=1))}
    for dimension in ("generation_id", "provider", "external_user"):
        refused = query(emu, {"metrics": ["request_count"], "dimensions": [dimension], "time_range": window})
        assert refused.status_code == 400
        assert "31 days" in spec.check("/analytics/query", "post", refused)["error"]["message"]
    by_model = query(emu, {"metrics": ["request_count"], "dimensions": ["model"], "time_range": window})
    rows = spec.check("/analytics/query", "post", by_model)["data"]["data"]  # allowed: aggregate-only history
    assert sum(int(r["request_count"]) for r in rows) == truth(emu, start.date() + dt.timedelta(days=1))["count"] > 0
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    too_old = query(emu, {"metrics": ["request_count"],
                          "time_range": {"start": iso(old), "end": iso(old + dt.timedelta(days=1))}})
    assert too_old.status_code == 400


def test_activity_only_for_the_last_30_completed_days(emu: EmulatorProcess, spec: SpecValidator) -> None:
    for day in (today(), today() - dt.timedelta(days=31), today() + dt.timedelta(days=1)):
        refused = call(emu, "GET", "/activity", params={"date": day.isoformat()})
        assert refused.status_code == 400
        assert spec.check("/activity", "get", refused)["error"]["message"] == \
            "Date must be within the last 30 (completed) UTC days"
    oldest = call(emu, "GET", "/activity", params={"date": (today() - dt.timedelta(days=30)).isoformat()})
    assert spec.check("/activity", "get", oldest)["data"] == []
    assert call(emu, "GET", "/activity", params={"date": "yesterday"}).status_code == 400


@pytest.mark.parametrize(("method", "path"), [("POST", "/analytics/query"), ("GET", "/analytics/meta"),
                                              ("GET", "/activity"), ("GET", "/credits")])
def test_management_only_endpoints_refuse_the_inference_key(emu: EmulatorProcess, spec: SpecValidator,
                                                            shapes: str, method: str, path: str) -> None:
    body = {"metrics": ["request_count"]} if method == "POST" else None
    refused = call(emu, method, path, key="inference", json=body)
    assert refused.status_code == 403
    error = spec.check(path, method.lower(), refused)["error"]
    message = "Only management keys can perform this operation"
    if shapes == "live" and path == "/activity":  # the live text (real-payloads/errors/05)
        message = "Only management keys can fetch activity for an account"
    assert error == {"code": 403, "message": message}
    missing = call(emu, method, path, key=None, json=body)
    assert missing.status_code == 401
    assert spec.check(path, method.lower(), missing)["error"] == {
        "code": 401, "message": "No auth credentials found" if shapes == "live" else "Missing Authentication header"}
    secret = "sk-or-v1-never-echo-this"
    wrong = call(emu, method, path, key=secret, json=body)
    assert wrong.status_code == 401 and secret not in wrong.text
    assert call(emu, method, path, json=body).status_code == 200


def test_inference_key_reads_generations_and_key(emu: EmulatorProcess, spec: SpecValidator) -> None:
    gen_id = truth(emu, yesterday())["ids"][0]
    assert call(emu, "GET", "/generation", key="inference", params={"id": gen_id}).status_code == 200
    assert call(emu, "GET", "/key", key="inference").status_code == 200
    assert spec.check("/generation", "get", call(emu, "GET", "/generation", key=None,
                                                 params={"id": gen_id}))["error"]["code"] == 401


@pytest.mark.parametrize(("body", "needle"), [
    ({"metrics": ["request_count", "tokens_per_dollar"]}, "Unknown metric"),
    ({"metrics": ["total_cost"]}, "Unknown metric"),  # OpenRouter documents total_usage, no total_cost
    ({"metrics": []}, "metric"),
    ({"dimensions": ["model"]}, "metric"),
    ({"metrics": ["request_count"], "dimensions": ["model", "provider", "app"]}, "At most 2"),
    ({"metrics": ["request_count"], "dimensions": ["country"]}, "Unknown dimension"),
    ({"metrics": ["request_count"], "granularity": "minute"}, "3 hours"),
    ({"metrics": ["request_count"], "filters": [{"field": "model", "operator": "like", "value": "x"}]}, "operator"),
    ({"metrics": ["request_count"], "filters": [{"field": "model", "operator": "eq", "value": "a"}] * 21}, "20"),
])
def test_bad_analytics_queries_are_400(emu: EmulatorProcess, spec: SpecValidator, body: dict[str, Any],
                                       needle: str) -> None:
    response = query(emu, body)
    assert response.status_code == 400
    assert needle in spec.check("/analytics/query", "post", response)["error"]["message"]


def test_filters_select_by_underlying_ids(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    expected = truth(emu, day)
    body = spec.check("/analytics/query", "post", query(emu, {
        "metrics": ["request_count"], "dimensions": ["model"], "time_range": day_range(day),
        "filters": [{"field": "model", "operator": "in", "value": ["openai/gpt-4.1", "x-ai/grok-3-mini"]},
                    {"field": "api_key_id", "operator": "neq", "value": "1005"}]}))  # ci-evals, by numeric id
    slugs = slug_of(expected)
    got = {slugs[r["model"]]: int(r["request_count"]) for r in rows_of(body)}
    assert "warnings" not in body["data"]
    assert set(got) == {"openai/gpt-4.1", "x-ai/grok-3-mini"}
    assert 0 < got["openai/gpt-4.1"] < expected["by_model"]["openai/gpt-4.1"]
    some = expected["ids"][:3]
    picked = query(emu, {"metrics": ["request_count"], "dimensions": ["generation_id"], "time_range": day_range(day),
                         "filters": [{"field": "generation_id", "operator": "in", "value": some}]}).json()
    assert sorted(r["generation_id"] for r in rows_of(picked)) == some


def test_fault_rules_answer_429_with_retry_after(emu: EmulatorProcess, spec: SpecValidator) -> None:
    gen_id = truth(emu, yesterday())["ids"][0]
    control(emu, "DELETE", "/stats")
    control(emu, "POST", "/faults", json={"rules": [
        {"path": "/generation", "status": 429, "count": 2, "retry_after": 3},
        {"path": "*", "status": 503, "count": 1}]})
    try:
        for _ in range(2):
            limited = call(emu, "GET", "/generation", params={"id": gen_id})
            assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
            assert spec.check("/generation", "get", limited)["error"] == {"code": 429, "message": "Rate limit exceeded"}
        unavailable = call(emu, "GET", "/generation", params={"id": gen_id})
        assert unavailable.status_code == 503
        spec.check("/generation", "get", unavailable, fallback=True)
        assert call(emu, "GET", "/generation", params={"id": gen_id}).status_code == 200
        assert control(emu, "GET", "/faults")["rules"] == []
        stats = control(emu, "GET", "/stats")
        assert stats["by_path_status"]["/generation"] == {"429": 2, "503": 1, "200": 1}
    finally:
        control(emu, "DELETE", "/faults")


def test_a_fault_rule_with_an_id_answers_only_that_record(emu: EmulatorProcess, spec: SpecValidator) -> None:
    missing, present = truth(emu, yesterday())["ids"][:2]
    control(emu, "POST", "/faults", json={"rules": [{"path": "/generation", "id": missing, "status": 404,
                                                     "count": 1000}]})
    try:
        for _ in range(3):
            gone = call(emu, "GET", "/generation", params={"id": missing})
            assert gone.status_code == 404
            spec.check("/generation", "get", gone, fallback=True)
            assert gone.json() == {"error": {"message": f"Generation {missing} not found", "code": 404}}  # live
        assert call(emu, "GET", "/generation", params={"id": present}).status_code == 200
        assert control(emu, "GET", "/faults")["rules"][0]["count"] == 997
        refused = requests.post(f"{emu.control_url}/faults", json={"rules": [{"path": "*", "id": missing,
                                                                               "status": 404}]}, timeout=10)
        assert refused.status_code == 400 and "needs path /generation" in refused.text
    finally:
        control(emu, "DELETE", "/faults")


def test_analytics_rate_limit_per_key(capped: EmulatorProcess, spec: SpecValidator) -> None:
    control(capped, "POST", "/config", json={"analytics_rpm": 3})
    try:
        body = {"metrics": ["request_count"], "time_range": day_range(yesterday())}
        assert [query(capped, body).status_code for _ in range(3)] == [200, 200, 200]
        limited = query(capped, body)
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        spec.check("/analytics/query", "post", limited, fallback=True)  # the spec lists no 429 here
    finally:
        control(capped, "POST", "/config", json={"analytics_rpm": 0})
    assert query(capped, body).status_code == 200


def test_generation_404_switches(emu: EmulatorProcess) -> None:
    gen_id = truth(emu, yesterday())["ids"][1]
    control(emu, "POST", "/config", json={"generation_404_first": 2})
    try:
        statuses = [call(emu, "GET", "/generation", params={"id": gen_id}).status_code for _ in range(3)]
    finally:
        control(emu, "POST", "/config", json={"generation_404_first": 0})
    assert statuses == [404, 404, 200]
    control(emu, "POST", "/config", json={"fresh_404_seconds": 10**9})  # every record counts as fresh
    try:
        assert call(emu, "GET", "/generation", params={"id": gen_id}).status_code == 404
    finally:
        control(emu, "POST", "/config", json={"fresh_404_seconds": 5})
    assert call(emu, "GET", "/generation", params={"id": gen_id}).status_code == 200


# --- Data: determinism, identical timestamps, late arrivals ----------------------------------------------


def test_same_seed_same_day_in_two_processes(emu: EmulatorProcess, capped: EmulatorProcess,
                                              tmp_path: Path) -> None:
    day = yesterday()
    first, second = truth(emu, day), truth(capped, day)
    assert first == second and first["count"] == 2000
    gen_id = first["ids"][123]
    assert call(emu, "GET", "/generation", params={"id": gen_id}).json() == \
        call(capped, "GET", "/generation", params={"id": gen_id}).json()
    with run_emulator(seed=8, generations_per_day=200, days=1, log_path=tmp_path / "seed8.log") as other:
        assert not set(truth(other, day)["ids"]) & set(first["ids"])


def test_identical_timestamp_pairs_exist_and_stay_distinct(emu: EmulatorProcess) -> None:
    day = yesterday()
    ids = truth(emu, day)["ids"]

    def fetch(chunk: list[str]) -> list[dict[str, Any]]:
        with requests.Session() as session:
            headers = {"Authorization": f"Bearer {emu.management_key}"}
            return [session.get(f"{emu.base_url}/generation", params={"id": i}, headers=headers,
                                timeout=30).json()["data"] for i in chunk]

    with ThreadPoolExecutor(8) as pool:
        records = [r for chunk in pool.map(fetch, [ids[k::8] for k in range(8)]) for r in chunk]
    assert sorted(r["id"] for r in records) == ids
    groups = Counter((r["created_at"], r["model"], r["provider_name"]) for r in records)
    twins = [key for key, n in groups.items() if n >= 2]
    assert 0.005 * len(ids) <= len(twins) <= 0.015 * len(ids)
    assert max(groups.values()) == 2
    byok = sum(r["is_byok"] for r in records) / len(records)
    cancelled = [r for r in records if r["cancelled"]]
    assert 0.01 < byok < 0.06 and 0.005 < len(cancelled) / len(records) < 0.04
    assert {r["finish_reason"] for r in cancelled} <= {None, "cancelled"}
    assert len({r["external_user"] for r in records}) > 30 and None in {r["external_user"] for r in records}


def test_late_generations_join_the_day(capped: EmulatorProcess, spec: SpecValidator) -> None:
    day = today() - dt.timedelta(days=2)
    before = truth(capped, day)
    added = control(capped, "POST", "/generations", json={"date": day.isoformat(), "count": 4})
    assert added["count"] == 4 and not set(added["ids"]) & set(before["ids"])
    after = truth(capped, day)
    assert after["count"] == before["count"] + 4 and set(added["ids"]) <= set(after["ids"])
    [total] = rows_of(query(capped, {"metrics": ["request_count"], "time_range": day_range(day)}).json())
    assert int(total["request_count"]) == after["count"]
    data = spec.check("/generation", "get", call(capped, "GET", "/generation", params={"id": added["ids"][0]}))
    assert created_at(data["data"]).date() == day


def test_the_validator_rejects_what_the_spec_forbids(emu: EmulatorProcess, spec: SpecValidator,
                                                     shapes: str) -> None:
    record = call(emu, "GET", "/generation", params={"id": truth(emu, yesterday())["ids"][0]}).json()
    pointer = "#/components/schemas/GenerationResponse"
    spec.validate(pointer, record)
    for broken in ({**record["data"], "total_cost": "0.1"}, {k: v for k, v in record["data"].items() if k != "usage"},
                   {k: v for k, v in record["data"].items() if k != "id"}, {**record["data"], "latency": "12"}):
        with pytest.raises(jsonschema.ValidationError):
            spec.validate(pointer, {"data": broken})
    if shapes == "live":  # what is excused is needed: the spec as it stands refuses a live body
        assert "workspace_id" not in record["data"]
        with pytest.raises(jsonschema.ValidationError, match="workspace_id"):
            spec.strict.validate(pointer, record)


def test_a_dead_emulator_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(EmulatorStartError, match="invalid int value"):
        start_emulator(extra_args=["--analytics-rpm", "many"], log_path=tmp_path / "dead.log")
