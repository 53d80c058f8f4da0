"""Broadcast destinations (`/observability/destinations`): list, create, get, update and delete, in memory.

OpenRouter manages where Broadcast pushes through this API (management key; the emulator's router checks
it), so a client that sets up its own destination is tested against it. The shapes, defaults and statuses
are the spec's: create answers 201, update changes only the fields given, delete is soft (the destination
is gone from list and get), an unknown id is 404, a bad field 400 naming it, at most 5 destinations per type.
The emulator's choices where the spec is silent: only `webhook` destinations are kept (another type is a 400
saying so); fields it does not know are dropped (the live API takes fields newer than the spec: the official
SDK sends `broadcast_generation_cost_allocation` and `regions`); header values are answered masked
(`********`), as the spec's examples mask secrets (`GET /_emulator/destinations` tells tests what is stored).
Destinations do not change what the emulator pushes (`--broadcast-url` and `POST /_emulator/broadcast` do).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from openrouter_emulator.broadcast_settings import check_headers, check_url
from openrouter_emulator.organisation import WORKSPACES, stable_uuid
from openrouter_emulator.protocol import ApiError, Request, Response, query_param

PATH = "/observability/destinations"
TYPES = ("arize", "braintrust", "clickhouse", "datadog", "grafana", "langfuse", "langsmith", "newrelic", "opik",
         "otel-collector", "posthog", "ramp", "s3", "sentry", "snowflake", "weave", "webhook")
EMULATED_TYPES = ("webhook",)
MAX_PER_TYPE = 5
MASK = "********"
_FLAGS = ("enabled", "privacy_mode", "broadcast_generation_cost", "broadcast_generation_identity",
          "broadcast_generation_request_context")
_UPDATABLE = frozenset({"name", "config", "sampling_rate", "api_key_hashes", "filter_rules", *_FLAGS})
_CREATABLE = _UPDATABLE | {"type", "workspace_id"}
# Tuples, not sets: a JSON list or object sent in their place is then simply not found (never unhashable).
_RULE_FIELDS = ("model", "provider", "session_id", "user_id", "api_key_name", "finish_reason", "input", "output",
                "total_cost", "total_tokens", "prompt_tokens", "completion_tokens")
_OPERATORS = ("equals", "not_equals", "contains", "not_contains", "regex", "starts_with", "ends_with", "gt", "lt",
              "gte", "lte", "exists", "not_exists")


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad("name must be a non-empty string")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"{name} must be a boolean")
    return value


def _sampling_rate(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0001 <= value <= 1:
        raise _bad("sampling_rate must be a number from 0.0001 to 1")
    return value


def _key_hashes(value: Any) -> list[str] | None:
    if value is not None and (not isinstance(value, list) or not value
                              or not all(isinstance(h, str) and h for h in value)):
        raise _bad("api_key_hashes must be null or a non-empty list of key hashes")
    return value


def _filter_rules(value: Any) -> dict[str, Any] | None:
    """None, or `{enabled?, groups: [{logic?, rules: [{field, operator, value?}]}]}` with the spec's words."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("groups"), list) \
            or set(value) - {"enabled", "groups"} or not isinstance(value.get("enabled", True), bool):
        raise _bad("filter_rules must be null or an object with a groups list (and enabled)")
    for index, group in enumerate(value["groups"]):
        where = f"filter_rules.groups[{index}]"
        if not isinstance(group, dict) or set(group) - {"logic", "rules"} or not isinstance(group.get("rules"), list) \
                or group.get("logic", "and") not in ("and", "or"):
            raise _bad(f"{where} must be an object with a rules list and logic 'and' or 'or'")
        for rule in group["rules"]:
            if not isinstance(rule, dict) or set(rule) - {"field", "operator", "value"} \
                    or rule.get("field") not in _RULE_FIELDS or rule.get("operator") not in _OPERATORS \
                    or isinstance(rule.get("value"), bool) or not isinstance(rule.get("value", ""), (str, int, float)):
                raise _bad(f"{where}.rules: each rule is {{field, operator, value?}} with the spec's fields and "
                           "operators")
    return value


def _config(value: Any, current: Mapping[str, Any] | None) -> dict[str, Any]:
    """A webhook's `{url, method?, headers?}`; an update's fields replace the current ones."""
    if not isinstance(value, dict):
        raise _bad("config must be an object")
    given = {key: value[key] for key in ("url", "method", "headers") if key in value}
    config = {"url": None, "method": "POST", **(current or {}), **given}
    try:
        config["url"] = check_url(config["url"], "config.url")
        headers = check_headers(config.get("headers", {}), "config.headers")
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if config["method"] not in ("POST", "PUT"):
        raise _bad("config.method must be POST or PUT")
    config["headers"] = headers
    if not headers:
        del config["headers"]
    return config


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": _name, "sampling_rate": _sampling_rate, "api_key_hashes": _key_hashes, "filter_rules": _filter_rules,
    **{flag: functools.partial(_flag, flag) for flag in _FLAGS},
}


def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    return {key: value for key, value in body.items() if key in allowed}


def _iso(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Destinations:
    """One account's destinations; each handler is `(request, now)` -> payload, as the emulator's routes."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._made = 0
        self._kept: dict[str, dict[str, Any]] = {}  # id -> destination, header values unmasked

    def routes(self) -> dict[tuple[str, str], Callable[[Request, float], Any]]:
        return {("GET", PATH): self.listing, ("POST", PATH): self.create, ("GET", f"{PATH}/{{id}}"): self.get,
                ("PATCH", f"{PATH}/{{id}}"): self.update, ("DELETE", f"{PATH}/{{id}}"): self.delete}

    def stored(self) -> list[dict[str, Any]]:
        """Every destination with its header values, for the control API (the ground truth of a setup)."""
        return [{**d, "config": dict(d["config"])} for d in self._kept.values()]

    def listing(self, request: Request, now: float) -> dict[str, Any]:
        offset, limit = (_whole(request, name, default, low, high)
                         for name, default, low, high in (("offset", 0, 0, None), ("limit", 50, 1, 100)))
        workspace = query_param(request.params, "workspace_id") or WORKSPACES[0].workspace_id
        found = [_public(d) for d in self._kept.values() if d["workspace_id"] == workspace]
        return {"data": found[offset:offset + limit], "total_count": len(found)}

    def create(self, request: Request, now: float) -> Response:
        body = _body(request, _CREATABLE)
        for required in ("type", "name", "config"):
            if required not in body:
                raise _bad(f"{required} is required")
        kind = body["type"]
        if kind not in TYPES:
            raise _bad(f"type must be one of {', '.join(TYPES)}")
        if kind not in EMULATED_TYPES:
            raise _bad(f"type {kind!r} is not emulated: the emulator keeps webhook destinations only")
        workspace = body.get("workspace_id", WORKSPACES[0].workspace_id)
        if workspace not in [w.workspace_id for w in WORKSPACES]:
            raise _bad("workspace_id is not a workspace of this organisation")
        if sum(d["type"] == kind for d in self._kept.values()) >= MAX_PER_TYPE:
            raise _bad(f"A maximum of {MAX_PER_TYPE} {kind} destinations is allowed")
        given = {k: _CHECKS[k](v) for k, v in body.items() if k in _CHECKS}
        config = _config(body["config"], None)
        self._made += 1
        destination: dict[str, Any] = {
            "api_key_hashes": None, "broadcast_generation_cost": False, "broadcast_generation_identity": False,
            "broadcast_generation_request_context": False, "config": config, "created_at": _iso(now),
            "enabled": True, "filter_rules": None, "id": stable_uuid(f"destination:{self._seed}:{self._made}"),
            "name": None, "privacy_mode": False, "sampling_rate": 1, "type": kind, "updated_at": _iso(now),
            "workspace_id": workspace, **given}
        self._kept[destination["id"]] = destination
        return Response(201, {"data": _public(destination)}, {})

    def get(self, request: Request, now: float) -> dict[str, Any]:
        return {"data": _public(self._find(request))}

    def update(self, request: Request, now: float) -> dict[str, Any]:
        destination = self._find(request)
        body = _body(request, _UPDATABLE)
        changed = {k: _CHECKS[k](v) for k, v in body.items() if k in _CHECKS}
        if "config" in body:
            changed["config"] = _config(body["config"], destination["config"])
        destination.update(changed, updated_at=_iso(now))
        return {"data": _public(destination)}

    def delete(self, request: Request, now: float) -> dict[str, Any]:
        del self._kept[self._find(request)["id"]]
        return {"deleted": True}

    def _find(self, request: Request) -> dict[str, Any]:
        found = self._kept.get(request.path.rsplit("/", 1)[-1])
        if found is None:
            raise ApiError(404, "Resource not found")
        return found


def route_of(path: str) -> str:
    """The route a path takes: `/observability/destinations/<id>` is `.../{id}`, any other path itself."""
    head, _, tail = path.rpartition("/")
    return f"{PATH}/{{id}}" if head == PATH and tail else path


def _whole(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = query_param(request.params, name)
    if text is None or text == "":
        return default
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else -1
    if number < low or (high is not None and number > high):
        raise _bad(f"{name} must be a whole number from {low}" + (f" to {high}" if high is not None else ""))
    return number


def _public(destination: Mapping[str, Any]) -> dict[str, Any]:
    """The destination as answered: header values masked."""
    config = dict(destination["config"])
    if "headers" in config:
        config["headers"] = dict.fromkeys(config["headers"], MASK)
    return {**destination, "config": config}
