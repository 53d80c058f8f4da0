"""`usage-pipeline broadcast-setup`: the organisation's Broadcast destination, created once and updated after.

The receiver wants OpenRouter to POST to its public HTTPS URL with `Authorization: Bearer <BROADCAST_TOKEN>`.
The drain and the nightly coverage check each span's cost and key name against the record, and OpenRouter
sends cost and identity attributes only to a destination that opts in; coverage means every request, so
sampling 1, no key allowlist, no filter rules. Privacy mode is on: prompts and completions are never read.
The destination is found by its name, `usage_pipeline <org>`, so a second run updates the same one (a new
URL or token included) instead of adding another. What is printed is what OpenRouter answered: the id, URL,
attributes and header names, never a header value, the token or the key.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit

from usage_pipeline.broadcast.destinations import create_destination, list_destinations, update_destination
from usage_pipeline.openrouter.errors import OpenRouterAuthError, OpenRouterError
from usage_pipeline.openrouter.settings import OpenRouterSettings, redact_url
from usage_pipeline.openrouter.source import OpenRouterClient
from usage_pipeline.organisations import load_organisations
from usage_pipeline.settings import SettingError, setting

WEBHOOK = "webhook"
AUTH_HEADER = "Authorization"
# What the push path needs of every delivery, set on each run (a hand-made change to sampling is undone).
WANTED: dict[str, Any] = {"enabled": True, "sampling_rate": 1, "privacy_mode": True,
                          "broadcast_generation_cost": True, "broadcast_generation_identity": True,
                          "api_key_hashes": None, "filter_rules": None}


def webhook_url(url: str) -> str:
    """The receiver's public URL: https (OpenRouter posts the token over the internet) with a host."""
    try:
        parts = urlsplit(url)
        secure = parts.scheme == "https" and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, a broken IPv6 address
        secure = False
    if not secure:
        raise SettingError(f"--url must be an https:// URL with a host (OpenRouter sends the token to it), "
                           f"got {redact_url(url)[:200]!r}")
    return url


def set_up(client: OpenRouterClient, org: str, url: str, token: str) -> tuple[str, dict[str, Any]]:
    """Create the organisation's webhook destination, or update the one of that name: ("created" or "updated",
    the destination as answered); OpenRouterError when two share the name or the answer differs from the ask."""
    name = f"usage_pipeline {org}"
    fields = {"name": name, "config": {"url": url, "method": "POST", "headers": {AUTH_HEADER: f"Bearer {token}"}},
              **WANTED}
    same = [d for d in list_destinations(client) if d.get("type") == WEBHOOK and d.get("name") == name]
    if len(same) > 1:
        raise OpenRouterError(f"{len(same)} webhook destinations are named {name!r} "
                              f"({', '.join(str(d.get('id')) for d in same)}): delete all but one, then run again")
    if same:
        action, answered = "updated", update_destination(client, str(same[0]["id"]), fields)
    else:
        action, answered = "created", create_destination(client, {"type": WEBHOOK, **fields})
    config: dict[str, Any] = answered["config"] if isinstance(answered.get("config"), dict) else {}
    differs = [f"{key} {json.dumps(answered.get(key))}" for key, value in WANTED.items() if answered.get(key) != value]
    if config.get("url") != url:
        differs.append(f"url {redact_url(str(config.get('url')))[:200]!r}")
    if AUTH_HEADER not in (config.get("headers") or {}):
        differs.append(f"no {AUTH_HEADER} header")
    if differs:
        raise OpenRouterError(f"destination {answered['id']} was {action}, but OpenRouter answered "
                              f"{', '.join(differs)}")
    return action, answered


def describe(org: str, action: str, destination: dict[str, Any]) -> list[str]:
    """What was set, as OpenRouter answered it: header names only."""
    config = destination["config"]
    return [f"broadcast-setup {org}: {action} destination {destination['id']} "
            f"({destination.get('type')}, name {destination.get('name')!r})",
            f"  url: {redact_url(str(config.get('url')))} ({config.get('method', 'POST')})",
            f"  headers: {', '.join(sorted(config.get('headers') or {}))} (values not shown)",
            "  " + ", ".join(f"{key} {json.dumps(destination.get(key))}" for key in WANTED)]


def broadcast_setup(url: str, org_name: str | None) -> int:
    """The command: settings from the environment (the organisation's key, its base URL, BROADCAST_TOKEN), one
    line on error; without Dagster's import (seconds), as the destination needs no resource."""
    webhook_url(url)
    token = setting("BROADCAST_TOKEN")
    if token is None:
        raise SettingError("BROADCAST_TOKEN is not set: the destination sends it as the bearer token the "
                           "receiver checks")
    org = load_organisations().pick(org_name)
    settings = OpenRouterSettings(api_key=org.api_key(), base_url=org.base_url or setting("OPENROUTER_BASE_URL"),
                                  give_up_after_s=setting("OPENROUTER_GIVE_UP_AFTER_S"))
    try:
        with OpenRouterClient(settings) as client:
            action, destination = set_up(client, org.name, url, token)
    except OpenRouterAuthError as exc:
        print(f"usage-pipeline broadcast-setup: OpenRouter refused the key in {org.key_variable} ({exc.status}): "
              "Broadcast destinations are managed with the organisation's management key", file=sys.stderr)
        return 1
    except OpenRouterError as exc:
        print(f"usage-pipeline broadcast-setup: {exc}", file=sys.stderr)
        return 1
    print("\n".join(describe(org.name, action, destination)), flush=True)
    return 0
