"""How the live API writes what the spec's examples write otherwise: the default `--shapes live`.

The spec is OpenRouter's contract, but the bodies its live service sends (`shared/openrouter/real-payloads/`)
differ from the spec's examples, and a client must survive the real ones. Where the two disagree the real
bodies win by default; `--shapes spec` keeps the examples' shapes. The values stay the same either way
(ids, instants, usage, cost, tokens, provider), so analytics, `/activity` and the truth agree with both:

- `GET /generation`: `model` is the dated permaslug (as `provider_responses[].model_permaslug`); `created_at`
  is written to the millisecond with `Z`; `workspace_id` is never sent, and a quarter of the bodies (chosen
  by id) lack the fields a 2026-02 body lacks too; latencies are integers; numbers are written as
  JavaScript writes them (a cost of 0 is `0`); counts nobody measured are null; a fallback attempt has no `id`.
- `GET /activity`: `date` is `YYYY-MM-DD 00:00:00`; rows add `byok_requests` and `cached_tokens` (the
  official SDK requires the latter), in the live key order.
- Errors: the live messages of a request without a key and of `/activity` asked with an inference key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

LIVE, SPEC = "live", "spec"
SHAPES = (LIVE, SPEC)

# The newest complete live body's keys, in its order (real-payloads/generation/04, 2026-06-25: 44 fields).
GENERATION_KEYS: tuple[str, ...] = (
    "created_at", "model", "app_id", "external_user", "streamed", "cancelled", "latency", "moderation_latency",
    "generation_time", "tokens_prompt", "tokens_completion", "native_tokens_prompt", "native_tokens_completion",
    "native_tokens_completion_images", "native_tokens_reasoning", "native_tokens_cached", "num_media_prompt",
    "num_input_audio_prompt", "num_media_completion", "num_search_results", "num_fetches", "web_search_engine",
    "origin", "is_byok", "finish_reason", "native_finish_reason", "service_tier", "usage", "router",
    "provider_responses", "user_agent", "http_referer", "request_id", "session_id", "preset_id", "api_type", "id",
    "upstream_id", "total_cost", "cache_discount", "upstream_inference_cost", "provider_name",
    "response_cache_source_id", "data_region",
)
# Required by the spec, never sent live (no live body has it).
ALWAYS_ABSENT: frozenset[str] = frozenset({"workspace_id"})
# Required by the spec, absent from a share of live bodies (the 2026-02 body lacks them all).
SOMETIMES_ABSENT: frozenset[str] = frozenset({"service_tier", "num_fetches", "web_search_engine", "preset_id",
                                              "user_agent", "http_referer", "data_region"})
# Spec-required fields a live body may lack: exactly what a spec check of live bodies must excuse.
LIVE_ABSENT: frozenset[str] = ALWAYS_ABSENT | SOMETIMES_ABSENT
# Counts the live API answers null rather than 0 when there was nothing to count (real bodies 01, 02, 04).
_NULL_WHEN_ZERO = ("native_tokens_completion_images", "num_media_prompt", "num_input_audio_prompt",
                   "num_search_results", "num_fetches")
_INTEGER_MS = ("latency", "generation_time", "moderation_latency")
_MONEY = ("usage", "total_cost", "cache_discount", "upstream_inference_cost")
# Suffix characters of the ids whose bodies lack SOMETIMES_ABSENT: 16 of the 62, about a quarter.
_SHORT_BODY_CHARS = frozenset("ABCDEFGHIJKLMNOP")

# A live /activity row's keys in the live order (real-payloads/activity/01), plus `cached_tokens`.
ACTIVITY_KEYS: tuple[str, ...] = (
    "date", "model_permaslug", "model", "provider_name", "endpoint_id", "usage", "prompt_tokens",
    "completion_tokens", "reasoning_tokens", "cached_tokens", "requests", "byok_usage_inference", "byok_requests",
    "workspace_id",
)


def js_number(value: float | None) -> int | float | None:
    """A number as JavaScript's JSON.stringify writes it: an integral value has no fraction (`0`, not `0.0`)."""
    if value is None or not float(value).is_integer():
        return value
    return int(value)


def short_body(gen_id: str) -> bool:
    """Whether this id's body lacks SOMETIMES_ABSENT: decided by one (random) character of the id, so the
    same records are short in every run and whatever else is switched."""
    return len(gen_id) >= 20 and gen_id[-16] in _SHORT_BODY_CHARS


def live_created_at(spec_created_at: str) -> str:
    """`2026-06-25T13:55:48.515Z` from the spec's `2026-06-25T13:55:48.515000+00:00` (times are whole ms)."""
    return f"{spec_created_at[:23]}Z"


def _attempt(attempt: Mapping[str, Any]) -> dict[str, Any]:
    """A provider attempt as live: latency an integer, and a failed (fallback) attempt without an `id`."""
    live = dict(attempt)
    if live.get("status") != 200:
        live.pop("id", None)
    if isinstance(live.get("latency"), float):
        live["latency"] = round(live["latency"])
    return live


def live_generation(record: Mapping[str, Any]) -> dict[str, Any]:
    """The live body of a generation from its spec-shaped record (`generation_record`)."""
    values = dict(record)
    attempts = [_attempt(a) for a in values.get("provider_responses") or []]
    values["provider_responses"] = attempts
    if attempts:  # the live `model` is the permaslug the answering provider served
        values["model"] = attempts[-1]["model_permaslug"]
    values["created_at"] = live_created_at(values["created_at"])
    for name in _INTEGER_MS:
        if isinstance(values.get(name), float):
            values[name] = round(values[name])
    if values.get("upstream_inference_cost") is None:
        values["upstream_inference_cost"] = 0  # no upstream cost: written as the real bodies write it
    for name in _MONEY:
        values[name] = js_number(values.get(name))
    for name in _NULL_WHEN_ZERO:
        if values.get(name) == 0:
            values[name] = None
    absent = ALWAYS_ABSENT | (SOMETIMES_ABSENT if short_body(str(values["id"])) else frozenset())
    return {key: values[key] for key in GENERATION_KEYS if key in values and key not in absent}


def activity_date(date: dt.date, shapes: str) -> str:
    """`2026-06-12 00:00:00` live, `2026-06-12` as the spec's example."""
    return f"{date.isoformat()} 00:00:00" if shapes == LIVE else date.isoformat()


def live_activity_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A spec-shaped /activity row (with `byok_requests` and `cached_tokens` added) in the live order and
    number spelling."""
    values = dict(row)
    for name in ("usage", "byok_usage_inference"):
        values[name] = js_number(values[name])
    return {key: values[key] for key in ACTIVITY_KEYS if key in values}


def missing_key_message(shapes: str) -> str:
    """The 401 message of a request without a (bearer) key (real-payloads/errors/12 live)."""
    return "No auth credentials found" if shapes == LIVE else "Missing Authentication header"


def forbidden_message(path: str, shapes: str) -> str:
    """The 403 message of a management-only path asked with an inference key (errors/05 for /activity)."""
    if shapes == LIVE and path == "/activity":
        return "Only management keys can fetch activity for an account"
    return "Only management keys can perform this operation"
