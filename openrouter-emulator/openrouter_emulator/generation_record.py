"""One generation as `GET /generation` answers it: the 45 fields of the spec's `GenerationResponse.data`.

The columns hold only what varies per generation; this fills in what follows from them (the model's
slug, the provider's upstream id format, native finish reasons, fallback attempts, the app's origin),
so records are built on request and never stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from openrouter_emulator.columns import BYOK, CANCELLED, FALLBACK, ROUTED, STREAMED, WEB_SEARCH
from openrouter_emulator.isotime import EPOCH, US_PER_SECOND
from openrouter_emulator.organisation import (
    API_KEYS,
    APPS,
    ENDPOINTS,
    EXTERNAL_USERS,
    FINISH_REASONS,
    MODELS,
    WORKSPACES,
    stable_uuid,
)
from openrouter_emulator.usage_day import UsageDay


def format_created_at(created_us: int) -> str:
    """`2024-07-15T23:33:19.433273+00:00`, the API's own format."""
    return (EPOCH + dt.timedelta(microseconds=created_us)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


_NATIVE_FINISH = {
    "anthropic": {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens", "content_filter": "refusal"},
    "google": {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"},
}


def _nullable(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _upstream_id(provider: str, suffix: str) -> str:
    if provider in ("Anthropic", "Amazon Bedrock") or (provider == "Google" and suffix[0] < "N"):
        return f"msg_01{suffix}"
    if provider in ("Google AI Studio", "Google"):
        return suffix[::-1]
    return f"chatcmpl-{stable_uuid(suffix)}"


def generation_record(day: UsageDay, row: int) -> dict[str, Any]:
    """All 45 fields of the spec's `GenerationResponse.data`, null where the spec and reality allow."""
    c = day.columns
    endpoint = ENDPOINTS[int(c.endpoint[row])]
    model = MODELS[endpoint.model]
    key = API_KEYS[int(c.api_key[row])]
    flags = int(c.flags[row])
    created_us = int(c.created_us[row])
    suffix = c.id_suffix[row].decode()
    seconds = created_us // US_PER_SECOND
    finish_code = int(c.finish[row])
    finish = FINISH_REASONS[finish_code] if finish_code >= 0 else None
    native_finish = None if finish in (None, "error", "cancelled") else _NATIVE_FINISH.get(model.family, {}).get(
        finish, finish)
    app_code = int(c.app[row])
    app = APPS[app_code] if app_code >= 0 else None
    user_code = int(c.external_user[row])
    cached = int(c.tokens_cached[row])
    byok = bool(flags & BYOK)
    upstream = _upstream_id(endpoint.provider, suffix)
    latency = float(c.latency_ms[row])
    attempts: list[dict[str, Any]] = []
    if flags & FALLBACK:
        siblings = [e for e in ENDPOINTS if e.model == endpoint.model and e is not endpoint] or [endpoint]
        failed = siblings[ord(suffix[0]) % len(siblings)]
        attempts.append({"endpoint_id": failed.endpoint_id, "id": f"err-{suffix[:12]}", "is_byok": byok,
                         "latency": float(40 + ord(suffix[1]) % 200), "model_permaslug": model.permaslug,
                         "provider_name": failed.provider, "status": 429 if ord(suffix[2]) % 2 else 502})
    attempts.append({"endpoint_id": endpoint.endpoint_id, "id": upstream, "is_byok": byok, "latency": latency,
                     "model_permaslug": model.permaslug, "provider_name": endpoint.provider, "status": 200})
    web = bool(flags & WEB_SEARCH)
    pin = model.prompt_usd_per_mtok / 1e6
    return {
        "id": f"gen-{seconds}-{suffix}",
        "upstream_id": upstream,
        "total_cost": float(c.usage[row]),
        "cache_discount": round(cached * pin * 0.75, 9) if cached and not byok else None,
        "upstream_inference_cost": _nullable(c.upstream_cost[row]),
        "created_at": format_created_at(created_us),
        "model": model.slug,
        "app_id": app.app_id if app else None,
        "streamed": bool(flags & STREAMED),
        "cancelled": bool(flags & CANCELLED),
        "provider_name": endpoint.provider,
        "latency": latency,
        "moderation_latency": _nullable(c.moderation_ms[row]),
        "generation_time": float(c.generation_ms[row]),
        "finish_reason": finish,
        "service_tier": "default" if endpoint.provider == "OpenAI" else None,
        "tokens_prompt": int(c.tokens_prompt[row]),
        "tokens_completion": int(c.tokens_completion[row]),
        "native_tokens_prompt": int(c.tokens_prompt[row]),
        "native_tokens_completion": int(c.tokens_completion[row]),
        "native_tokens_completion_images": 0,
        "native_tokens_reasoning": int(c.tokens_reasoning[row]),
        "native_tokens_cached": cached,
        "num_media_prompt": 1 if model.family == "google" and ord(suffix[3]) % 10 == 0 else 0,
        "num_input_audio_prompt": 0,
        "num_media_completion": 0,
        "num_search_results": 5 if web else 0,
        "num_fetches": 0,
        "web_search_engine": "exa" if web else None,
        "origin": app.origin if app else "",
        "usage": float(c.usage[row]),
        "is_byok": byok,
        "native_finish_reason": native_finish,
        "external_user": EXTERNAL_USERS[user_code] if user_code >= 0 else None,
        "api_type": "completions",
        "preset_id": None,
        "router": "openrouter/auto" if flags & ROUTED else None,
        "provider_responses": attempts,
        "user_agent": key.user_agent,
        "http_referer": app.origin if app else None,
        "data_region": "global",
        "workspace_id": WORKSPACES[key.workspace].workspace_id,
        "request_id": f"req-{seconds}-{c.request_suffix[row].decode()}",
        "session_id": f"sess-{EXTERNAL_USERS[user_code][5:]}-{seconds // 3600}" if user_code >= 0 and user_code % 3 == 0
        else None,
        "response_cache_source_id": None,
    }
