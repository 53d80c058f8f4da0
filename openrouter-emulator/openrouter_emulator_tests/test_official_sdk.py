"""OpenRouter's official Python SDK (`openrouter==1.3.84`, pinned) reads the emulator's answers.

The SDK is generated from OpenRouter's own, newer OpenAPI document, so it is a second opinion on the shapes:
pointed at a real emulator process (default flags: live shapes) with the management key, each method it
has for the usage API must parse what the emulator sends and keep its values. Where the SDK's models
require a field the live API omits, the emulator does not add it; the test pins exactly what the SDK
refuses instead, so a change on either side shows:

- `get_generation`: the SDK requires `workspace_id` (never sent live) and, on a quarter of the bodies, the
  seven fields the 2026-02 body lacks too; with those supplied it reads the live body, values intact.
- `get_current_key_metadata`: the SDK requires six fields neither the spec of 2026-08-22 nor the emulator
  has (`allowed_data_regions`, `budgets`, `effective_budget`, `free_model_daily_requests`,
  `organization_id`, `workspace_id`); no real `/key` body is known.
- `query_analytics`: the SDK's row model declares no fields, so parsed rows carry no values (only the
  metadata does).
- `get_user_activity`: the SDK's row model has no `byok_requests` (live rows have it), so it drops it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Iterator
from typing import Any

import pytest
from openrouter import OpenRouter, errors, operations

from openrouter_emulator.process import EmulatorProcess, run_emulator
from openrouter_emulator_tests.support import (
    LIVE_ABSENT_GENERATION_FIELDS,
    OWNER,
    call,
    day_range,
    query,
    yesterday,
)

KEY_FIELDS_THE_SDK_ALONE_REQUIRES = {"allowed_data_regions", "budgets", "effective_budget",
                                     "free_model_daily_requests", "organization_id", "workspace_id"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("sdk") / "emulator.log"
    with run_emulator(seed=17, generations_per_day=400, days=2, log_path=log) as server:
        yield server


@pytest.fixture
def emu(live: EmulatorProcess) -> Iterator[EmulatorProcess]:
    yield live
    live.reset_config()
    live.clear_overrides()


@pytest.fixture(scope="module")
def sdk(live: EmulatorProcess) -> Iterator[OpenRouter]:
    """The SDK at the emulator's base URL, with the management key and without its retries."""
    with OpenRouter(api_key=live.management_key, server_url=live.base_url, retry_config=None,
                    timeout_ms=30_000) as client:
        yield client


def raw(server: EmulatorProcess, path: str, **params: Any) -> Any:
    answer = call(server, "GET", path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def refusals(error: errors.ResponseValidationError) -> set[tuple[str, str]]:
    """(field under `data`, pydantic's error type) of every complaint of the SDK's response models."""
    found = set()
    for complaint in error.cause.errors():
        location = complaint["loc"]
        assert location[:2] == ("body", "data") and len(location) == 3, complaint
        found.add((str(location[2]), str(complaint["type"])))
    return found


def test_the_sdk_is_the_pinned_one() -> None:
    assert importlib.metadata.version("openrouter") == "1.3.84"


def test_get_generation_refuses_exactly_the_fields_the_live_api_omits(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    ids = emu.truth(yesterday())["ids"]
    bodies = {i: raw(emu, "/generation", id=i)["data"] for i in ids[:40]}
    full = next(i for i, d in bodies.items() if "data_region" in d)
    short = next(i for i, d in bodies.items() if "data_region" not in d)
    for gen_id, missing in ((full, {"workspace_id"}), (short, set(LIVE_ABSENT_GENERATION_FIELDS))):
        with pytest.raises(errors.ResponseValidationError) as refused:
            sdk.generations.get_generation(id=gen_id)
        assert refusals(refused.value) == {(field, "missing") for field in missing}
        assert not missing & set(bodies[gen_id])
    # With the omitted fields supplied (as null), the SDK reads the live body and keeps its values.
    emu.override_records({short: {field: None for field in LIVE_ABSENT_GENERATION_FIELDS}})
    body = bodies[short]
    data = sdk.generations.get_generation(id=short).data
    assert (data.id, data.model, data.created_at, data.total_cost, data.usage, data.tokens_prompt,
            data.tokens_completion, data.provider_name, data.latency, data.upstream_inference_cost) == (
        body["id"], body["model"], body["created_at"], body["total_cost"], body["usage"], body["tokens_prompt"],
        body["tokens_completion"], body["provider_name"], body["latency"], body["upstream_inference_cost"])
    assert data.provider_responses is not None
    assert [p.model_permaslug for p in data.provider_responses] == [
        p["model_permaslug"] for p in body["provider_responses"]]


def test_get_generation_reads_spec_shaped_bodies(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    emu.configure(shapes="spec")
    gen_id = emu.truth(yesterday())["ids"][7]
    body = raw(emu, "/generation", id=gen_id)["data"]
    data = sdk.generations.get_generation(id=gen_id).data
    assert (data.id, data.model, data.created_at, data.total_cost, data.workspace_id, data.native_tokens_cached) == (
        gen_id, body["model"], body["created_at"], body["total_cost"], body["workspace_id"],
        body["native_tokens_cached"])


def test_error_answers_reach_the_sdk_as_its_errors(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    unknown = "gen-1700000000-AAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(errors.NotFoundResponseError) as not_found:
        sdk.generations.get_generation(id=unknown)
    assert (not_found.value.data.error.code, not_found.value.data.error.message) == (
        404, f"Generation {unknown} not found")
    emu.configure(throttle_share=1.0)
    with pytest.raises(errors.TooManyRequestsResponseError) as throttled:
        sdk.generations.get_generation(id=emu.truth(yesterday())["ids"][0])
    assert throttled.value.data.error.code == 429 and throttled.value.data.user_id == OWNER
    assert throttled.value.raw_response.headers["Retry-After"] == "1"


def test_get_user_activity(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    day = yesterday()
    rows = raw(emu, "/activity", date=day.isoformat())["data"]
    parsed = sdk.analytics.get_user_activity(request=operations.GetUserActivityRequest(date_=day.isoformat())).data
    assert len(parsed) == len(rows) > 10
    for item, row in zip(parsed, rows, strict=True):
        dumped = item.model_dump(by_alias=True)
        kept = {k: v for k, v in row.items() if k != "byok_requests"}
        assert {k: dumped[k] for k in kept} == kept  # every value the emulator sent, cached_tokens included...
        assert "byok_requests" in row and "byok_requests" not in dumped  # ...but the live byok_requests
    assert {item.date_ for item in parsed} == {f"{day.isoformat()} 00:00:00"}
    assert sum(item.requests for item in parsed) == emu.truth(day)["count"]


def test_query_analytics_and_meta(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    day = yesterday()
    span = day_range(day)
    body = {"metrics": ["request_count"], "dimensions": ["model"], "time_range": span}
    sent = query(emu, body).json()["data"]
    start, end = (dt.datetime.fromisoformat(span[k]) for k in ("start", "end"))
    answer = sdk.analytics.query_analytics(metrics=["request_count"], dimensions=["model"],
                                           time_range={"start": start, "end": end}).data
    assert (answer.metadata.row_count, answer.metadata.truncated) == (sent["metadata"]["row_count"], False)
    assert len(answer.data) == len(sent["data"]) == answer.metadata.row_count > 5
    assert all(row.model_dump() == {} for row in answer.data)  # the SDK's row model keeps no values
    meta = sdk.analytics.get_analytics_meta().data
    sent_meta = raw(emu, "/analytics/meta")["data"]
    assert [m.name for m in meta.metrics] == [m["name"] for m in sent_meta["metrics"]]
    assert [d.name for d in meta.dimensions] == [d["name"] for d in sent_meta["dimensions"]]


def test_models_list(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    sent = raw(emu, "/models")["data"]
    listed = sdk.models.list().result.data
    assert [(m.id, m.canonical_slug, m.name) for m in listed] == [(m["id"], m["canonical_slug"], m["name"])
                                                                   for m in sent]


def test_get_credits(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    before = raw(emu, "/credits")["data"]
    credits_ = sdk.credits.get_credits().data
    after = raw(emu, "/credits")["data"]  # today's usage may grow meanwhile
    assert before["total_usage"] <= credits_.total_usage <= after["total_usage"]
    assert before["total_credits"] == credits_.total_credits == after["total_credits"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's own, for the deprecated `rate_limit`
def test_get_current_key_metadata_requires_fields_no_spec_names(emu: EmulatorProcess, sdk: OpenRouter) -> None:
    sent = raw(emu, "/key")["data"]
    assert not KEY_FIELDS_THE_SDK_ALONE_REQUIRES & set(sent)
    with pytest.raises(errors.ResponseValidationError) as refused:
        sdk.api_keys.get_current_key_metadata()
    assert refusals(refused.value) == {(field, "missing") for field in KEY_FIELDS_THE_SDK_ALONE_REQUIRES}
