"""What the emulator tests share: the spec validator, HTTP helpers and date helpers (no usage_pipeline)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import requests
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from openrouter_emulator.process import EmulatorProcess

# The repository's checkout sits beside `shared/` (CI clones it elsewhere with shared/ beside the clone).
SPEC_PATH = Path(__file__).resolve().parents[2] / ".." / "shared" / "openrouter" / "openapi.yaml"
SPEC_URI = "urn:openrouter:openapi"
# Error statuses the emulator answers on paths whose spec entry does not list them (documented deviations).
COMPONENT_BY_STATUS = {400: "BadRequestResponse", 404: "NotFoundResponse", 429: "TooManyRequestsResponse",
                       500: "InternalServerResponse", 502: "BadGatewayResponse",
                       503: "ServiceUnavailableResponse"}


class SpecValidator:
    """Validates a live response against the spec's schema for (path, method, status), `$ref`s resolved."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(SPEC_URI, resource)

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
    """A `/generation` record's `created_at` (the emulator always sends 6 digits and `+00:00`)."""
    return dt.datetime.fromisoformat(record["created_at"])
