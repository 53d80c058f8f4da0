"""`/observability/destinations` as the spec defines it, over real HTTP to a real emulator process: every answer
(201, 200, 400, 401, 403, 404) validated against the spec's schema for its path, method and status, the
management key required, bad fields refused with a 400 naming them, header values never answered, and the
official SDK reading what the emulator answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from openrouter import OpenRouter, components

from openrouter_emulator.process import EmulatorProcess, run_emulator
from openrouter_emulator_tests.support import SpecValidator, call

LIST = "/observability/destinations"
ONE = "/observability/destinations/{id}"
TOKEN = "Bearer emulator-destination-token-0123"
CONFIG = {"url": "https://usage.example.com/v1/traces", "headers": {"Authorization": TOKEN}}
WEBHOOK: dict[str, Any] = {"type": "webhook", "name": "usage", "config": CONFIG}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("destinations") / "emulator.log"
    with run_emulator(seed=11, generations_per_day=100, days=1, log_path=log) as emu:
        yield emu


@pytest.fixture
def emu(server: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The module's emulator, with no destination before and after each test."""
    yield server
    for stored in server.control("GET", "/destinations")["data"]:
        assert call(server, "DELETE", f"{LIST}/{stored['id']}").status_code == 200


def create(emu: EmulatorProcess, spec: SpecValidator, **fields: Any) -> dict[str, Any]:
    answer = call(emu, "POST", LIST, json={**WEBHOOK, **fields})
    assert answer.status_code == 201, answer.text
    return spec.check(LIST, "post", answer)["data"]


def test_create_get_list_update_and_delete(emu: EmulatorProcess, spec: SpecValidator) -> None:
    made = create(emu, spec, broadcast_generation_cost=True)
    defaults = {"broadcast_generation_cost": True, "broadcast_generation_identity": False,
                "broadcast_generation_request_context": False, "enabled": True, "privacy_mode": False,
                "sampling_rate": 1, "api_key_hashes": None, "filter_rules": None, "type": "webhook", "name": "usage"}
    assert made == {**made, **defaults}
    assert made["config"] == {"url": CONFIG["url"], "method": "POST",
                              "headers": {"Authorization": "********"}}  # the value is never answered
    assert emu.control("GET", "/destinations")["data"][0]["config"]["headers"] == {"Authorization": TOKEN}
    one = ONE.replace("{id}", made["id"])
    assert spec.check(ONE, "get", call(emu, "GET", one))["data"] == made
    listed = spec.check(LIST, "get", call(emu, "GET", LIST))
    assert listed == {"data": [made], "total_count": 1}

    changed = call(emu, "PATCH", one, json={"sampling_rate": 0.5, "broadcast_generation_identity": True,
                                            "config": {"url": "https://other.example.com/v1/traces"}})
    assert changed.status_code == 200, changed.text
    updated = spec.check(ONE, "patch", changed)["data"]
    assert updated == {**made, "sampling_rate": 0.5, "broadcast_generation_identity": True,  # the rest is kept
                       "config": {**made["config"], "url": "https://other.example.com/v1/traces"},
                       "updated_at": updated["updated_at"]}
    assert emu.control("GET", "/destinations")["data"][0]["config"]["headers"] == {"Authorization": TOKEN}

    assert spec.check(ONE, "delete", call(emu, "DELETE", one)) == {"deleted": True}
    for method in ("GET", "PATCH", "DELETE"):
        gone = call(emu, method, one, json={} if method == "PATCH" else None)
        assert gone.status_code == 404
        assert spec.check(ONE, method.lower(), gone)["error"] == {"code": 404, "message": "Resource not found"}
    assert spec.check(LIST, "get", call(emu, "GET", LIST)) == {"data": [], "total_count": 0}


def test_the_list_pages_and_refuses_a_bad_page(emu: EmulatorProcess, spec: SpecValidator) -> None:
    ids = [create(emu, spec, name=f"usage {n}")["id"] for n in range(3)]
    page = spec.check(LIST, "get", call(emu, "GET", LIST, params={"offset": "1", "limit": "1"}))
    assert [d["id"] for d in page["data"]] == ids[1:2] and page["total_count"] == 3
    for params in ({"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"limit": "ten"}, {"offset": "9" * 5000}):
        refused = call(emu, "GET", LIST, params=params)
        assert refused.status_code == 400, params
        assert next(iter(params)) in spec.check(LIST, "get", refused)["error"]["message"]


def test_at_most_five_of_a_type(emu: EmulatorProcess, spec: SpecValidator) -> None:
    for n in range(5):
        create(emu, spec, name=f"usage {n}")
    refused = call(emu, "POST", LIST, json=WEBHOOK)
    assert refused.status_code == 400
    assert "maximum of 5" in spec.check(LIST, "post", refused)["error"]["message"]


BAD_FIELDS = [
    ({"type": None}, "type"), ({"name": None}, "name"), ({"config": None}, "config"),
    ({"type": "carrier-pigeon"}, "type must be one of"), ({"type": "langfuse"}, "not emulated"),
    ({"name": ""}, "name"), ({"name": ["usage"]}, "name"), ({"config": []}, "config"),
    ({"config": {"url": "ftp://usage.example.com"}}, "config.url"), ({"config": {}}, "config.url"),
    ({"config": {"url": "https://usage.example.com", "method": "GET"}}, "config.method"),
    ({"config": {"url": "https://usage.example.com", "headers": {"X-Token": "a\r\nb"}}}, "config.headers"),
    ({"config": {"url": "https://usage.example.com", "headers": ["Authorization"]}}, "config.headers"),
    ({"sampling_rate": 0}, "sampling_rate"), ({"sampling_rate": 1.5}, "sampling_rate"),
    ({"sampling_rate": "1"}, "sampling_rate"), ({"sampling_rate": True}, "sampling_rate"),
    ({"enabled": "yes"}, "enabled"), ({"broadcast_generation_cost": 1}, "broadcast_generation_cost"),
    ({"api_key_hashes": []}, "api_key_hashes"), ({"api_key_hashes": [7]}, "api_key_hashes"),
    ({"filter_rules": {"rules": []}}, "filter_rules"),
    ({"filter_rules": {"groups": [{"rules": [{"field": ["model"], "operator": "equals"}]}]}}, "filter_rules"),
    ({"workspace_id": ["not", "a", "workspace"]}, "workspace_id"),
]


@pytest.mark.parametrize(("fields", "needle"), BAD_FIELDS, ids=[needle for _, needle in BAD_FIELDS])
def test_a_bad_field_is_a_400_naming_it(emu: EmulatorProcess, spec: SpecValidator, fields: dict[str, Any],
                                        needle: str) -> None:
    body = {key: value for key, value in {**WEBHOOK, **fields}.items() if value is not None}
    refused = call(emu, "POST", LIST, json=body)
    assert refused.status_code == 400, refused.text
    assert needle in spec.check(LIST, "post", refused)["error"]["message"]
    kept = create(emu, spec)
    if not ({"type", "workspace_id"} & set(fields) or fields == {"config": {}}):  # an update keeps its url
        update = call(emu, "PATCH", ONE.replace("{id}", kept["id"]), json=fields)
        assert update.status_code == 400, update.text
        assert needle in spec.check(ONE, "patch", update)["error"]["message"]
    assert emu.control("GET", "/destinations")["data"] == [{**kept, "config": {**kept["config"], "headers": {
        "Authorization": TOKEN}}}]  # nothing refused was kept


@pytest.mark.parametrize("body", [b"{", b"[1]", b'{"sampling_rate": ' + b"9" * 5000 + b"}", b"[" * 100_000],
                         ids=["broken", "not-an-object", "5000-digit-number", "deeply-nested"])
def test_a_body_that_is_not_a_json_object_is_a_400(emu: EmulatorProcess, spec: SpecValidator, body: bytes) -> None:
    refused = call(emu, "POST", LIST, data=body)
    assert refused.status_code == 400
    spec.check(LIST, "post", refused)


@pytest.mark.parametrize(("method", "path"), [("GET", LIST), ("POST", LIST), ("GET", ONE), ("PATCH", ONE),
                                              ("DELETE", ONE)])
def test_only_the_management_key_manages_destinations(emu: EmulatorProcess, spec: SpecValidator, method: str,
                                                      path: str) -> None:
    kept = create(emu, spec)
    url = path.replace("{id}", kept["id"])
    body = WEBHOOK if method == "POST" else {"name": "taken over"} if method == "PATCH" else None
    refused = call(emu, method, url, key="inference", json=body)
    assert refused.status_code == 403
    statuses = spec.spec["paths"][path][method.lower()]["responses"]
    if "403" in statuses:
        spec.check(path, method.lower(), refused)
    else:  # the spec lists no 403 for this operation, though it says a management key is required
        spec.validate("#/components/schemas/ForbiddenResponse", refused.json())
    missing = call(emu, method, url, key=None, json=body)
    assert missing.status_code == 401
    spec.check(path, method.lower(), missing)
    secret = "sk-or-v1-never-echo-this"
    wrong = call(emu, method, url, key=secret, json=body)
    assert wrong.status_code == 401 and secret not in wrong.text
    assert emu.control("GET", "/destinations")["data"][0]["name"] == "usage"  # untouched


def test_the_official_sdk_reads_every_answer(emu: EmulatorProcess) -> None:
    """The SDK (generated from a newer spec) requires two destination fields the spec of 2026-08 lacks, so it
    keeps each answer raw, as an unknown destination; pinned, so a change on either side shows."""
    with OpenRouter(api_key=emu.management_key, server_url=emu.base_url, retry_config=None,
                    timeout_ms=30_000) as sdk:
        made = sdk.observability.create(type_="webhook", name="usage", config=CONFIG,
                                        broadcast_generation_cost=True).data
        assert isinstance(made, components.UnknownObservabilityDestination)
        with pytest.raises(pydantic.ValidationError) as refused:
            components.ObservabilityWebhookDestination.model_validate(made.raw)
        assert {(e["loc"], e["type"]) for e in refused.value.errors()} == {
            (("broadcast_generation_cost_allocation",), "missing"), (("regions",), "missing")}
        destination = {**made.raw, "broadcast_generation_cost_allocation": False, "regions": []}
        assert components.ObservabilityWebhookDestination.model_validate(destination).broadcast_generation_cost
        read = sdk.observability.get(id=made.raw["id"]).data
        assert isinstance(read, components.UnknownObservabilityDestination) and read.raw == made.raw
        page = sdk.observability.list()
        assert page is not None and [d.raw for d in page.result.data
                                     if isinstance(d, components.UnknownObservabilityDestination)] == [made.raw]
        updated = sdk.observability.update(id=made.raw["id"], sampling_rate=0.25).data
        assert isinstance(updated, components.UnknownObservabilityDestination)
        assert updated.raw["sampling_rate"] == 0.25
        assert sdk.observability.delete(id=made.raw["id"]).DELETED is True
        emptied = sdk.observability.list()
        assert emptied is not None and emptied.result.data == [] and emptied.result.total_count == 0
