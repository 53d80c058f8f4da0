"""OpenRouter's Broadcast destinations: `/observability/destinations`, read and written with a management key.

A destination is where Broadcast pushes each request as it completes, with which static headers, and with
which attributes: cost and identity are opt-in per destination (`broadcast_generation_cost`,
`broadcast_generation_identity`, both false unless set), so the push path sets its own destination by API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.source import OpenRouterClient

PATH = "/observability/destinations"
# The largest page; one holds them all, as each of the 17 types may have at most 5 destinations.
PAGE = 100


def list_destinations(client: OpenRouterClient) -> list[dict[str, Any]]:
    """Every destination of the key's default workspace."""
    page = client.call("GET", PATH, params={"offset": "0", "limit": str(PAGE)}).get("data")
    if not isinstance(page, list) or not all(isinstance(d, dict) for d in page):
        raise OpenRouterError(f"GET {PATH}: the answer has no list of destinations")
    return page


def create_destination(client: OpenRouterClient, fields: dict[str, Any]) -> dict[str, Any]:
    return _destination(client.call("POST", PATH, json_body=fields), f"POST {PATH}")


def update_destination(client: OpenRouterClient, destination_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """PATCH: only the fields given change."""
    path = f"{PATH}/{quote(destination_id, safe='')}"
    return _destination(client.call("PATCH", path, json_body=fields), f"PATCH {path}")


def _destination(answer: dict[str, Any], where: str) -> dict[str, Any]:
    data = answer.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise OpenRouterError(f"{where}: the answer has no destination with an id")
    return data
