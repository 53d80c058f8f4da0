"""What the emulator tests share: the spec validator, HTTP and date helpers, a pair of processes (no
usage_pipeline)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from openrouter_emulator.process import EmulatorProcess, start_emulator

# The repository's checkout sits beside `shared/` (CI clones it elsewhere with shared/ beside the clone).
SHARED_PATH = Path(__file__).resolve().parents[2] / ".." / "shared"
SPEC_PATH = SHARED_PATH / "openrouter" / "openapi.yaml"
SPEC_URI = "urn:openrouter:openapi"
# Error statuses the emulator answers on paths whose spec entry does not list them (documented deviations).
COMPONENT_BY_STATUS = {400: "BadRequestResponse", 404: "NotFoundResponse", 429: "TooManyRequestsResponse",
                       500: "InternalServerResponse", 502: "BadGatewayResponse",
                       503: "ServiceUnavailableResponse"}


# Spec-required fields of `GenerationResponse.data` that the live API leaves out, so live-shaped answers may
# too: `workspace_id` (no live body has it) and the fields the 2026-02 body lacks (real-payloads/generation/01).
OWNER = "user_2dHFtVWx2n56w6HkM7c0a1bQe4Z"  # the emulated account's owner (organisation.ACCOUNT_OWNER)
LIVE_ABSENT_GENERATION_FIELDS = frozenset({"workspace_id", "service_tier", "num_fetches", "web_search_engine",
                                           "preset_id", "user_agent", "http_referer", "data_region"})


class SpecValidator:
    """Validates a live response against the spec's schema for (path, method, status), `$ref`s resolved."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(SPEC_URI, resource)
        self._excusing: dict[frozenset[str], SpecValidator] = {}
        self.strict = self  # the spec as it stands (an `excusing` validator points back to its origin)

    def excusing(self, absent: frozenset[str]) -> SpecValidator:
        """The same spec, except that `GenerationResponse.data` no longer requires the fields `absent` (each
        must be one it requires): a check of live-shaped answers, strict about everything else."""
        if absent not in self._excusing:
            schemas = self.spec["components"]["schemas"]
            data = schemas["GenerationResponse"]["properties"]["data"]
            assert absent <= set(data["required"]), sorted(absent - set(data["required"]))
            relaxed_data = {**data, "required": [f for f in data["required"] if f not in absent]}
            response = {**schemas["GenerationResponse"],
                        "properties": {**schemas["GenerationResponse"]["properties"], "data": relaxed_data}}
            components = {**self.spec["components"], "schemas": {**schemas, "GenerationResponse": response}}
            relaxed = SpecValidator({**self.spec, "components": components})
            relaxed.strict = self.strict
            self._excusing[absent] = relaxed
        return self._excusing[absent]

    def check(self, path: str, method: str, response: requests.Response, *, fallback: bool = False) -> Any:
        """The parsed body, after validation; `fallback` allows a status the path does not list."""
        status = str(response.status_code)
        responses = self.spec["paths"][path][method]["responses"] if path in self.spec["paths"] else {}
        if status in responses:
            escaped = path.replace("~", "~0").replace("/", "~1")
            pointer = f"#/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
        else:
            assert fallback, f"the spec lists no {status} for {method.upper()} {path}"
            pointer = f"#/components/schemas/{COMPONENT_BY_STATUS[response.status_code]}"
        assert response.headers["Content-Type"].startswith("application/json")
        body = response.json()
        self.validate(pointer, body)
        return body

    def validate(self, pointer: str, body: Any) -> None:
        validator = OAS31Validator({"$ref": SPEC_URI + pointer}, registry=self.registry,
                                   format_checker=OAS31Validator.FORMAT_CHECKER)
        validator.validate(body)


_session = requests.Session()
T = TypeVar("T")


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 30.0) -> T:
    """Poll `probe()` until `done` holds for its value or `timeout_s` passes; the last value either way, for the
    caller to assert on. A wait on state, never on time: a slow machine only makes it poll longer."""
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = probe()
    return value


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def yesterday() -> dt.date:
    return today() - dt.timedelta(days=1)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day_range(day: dt.date) -> dict[str, str]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return {"start": iso(start), "end": iso(start + dt.timedelta(days=1))}


def auth(server: EmulatorProcess, key: str | None = "management") -> dict[str, str]:
    if key is None:
        return {}
    token = {"management": server.management_key, "inference": server.inference_key}.get(key, key)
    return {"Authorization": f"Bearer {token}"}


def call(server: EmulatorProcess, method: str, path: str, *, key: str | None = "management",
         session: requests.Session | None = None, timeout: float = 30, **kwargs: Any) -> requests.Response:
    return (session or _session).request(method, f"{server.base_url}{path}", headers=auth(server, key),
                                         timeout=timeout, **kwargs)


def query(server: EmulatorProcess, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    return call(server, "POST", "/analytics/query", json=body, **kwargs)


def control(server: EmulatorProcess, method: str, path: str, **kwargs: Any) -> Any:
    response = _session.request(method, f"{server.control_url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def rows_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["data"]["data"]


def created_at(record: dict[str, Any]) -> dt.datetime:
    """A `/generation` record's `created_at`: `…13:55:48.515Z` live, `…13:55:48.515000+00:00` spec-shaped."""
    moment = dt.datetime.fromisoformat(record["created_at"])
    assert moment.utcoffset() == dt.timedelta(0), record["created_at"]
    return moment


@contextmanager
def emulator_pair(logs: Path, extra_args: Sequence[str] = ()) -> Iterator[tuple[EmulatorProcess, EmulatorProcess]]:
    """Two processes with the same seed: `emu` with defaults (rate limit off), `capped` at 500 rows."""
    emu = start_emulator(seed=7, extra_args=["--analytics-rpm", "0", *extra_args], log_path=logs / "emu.log")
    try:
        capped = start_emulator(seed=7, extra_args=["--analytics-rpm", "0", "--analytics-max-rows", "500", *extra_args],
                                log_path=logs / "capped.log")
        try:
            yield emu, capped
        finally:
            capped.stop()
    finally:
        emu.stop()
