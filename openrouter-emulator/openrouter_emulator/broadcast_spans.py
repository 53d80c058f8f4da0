"""One OpenRouter Broadcast delivery (OTLP/HTTP JSON) for one generation, as the real ones are shaped.

The real deliveries (`shared/openrouter/real-payloads/broadcast/`) carry one request each: the root span
`LLM Generation` and the child spans `provider attempt N: <Provider>` and `generation`, each in its own
`resourceSpans` entry. The values come from the same record `GET /generation` answers (`generation_record`),
so a receiver can check the span's cost and tokens against it: `gen_ai.usage.total_cost` is the record's
`total_cost` and `input_tokens`/`output_tokens` its `tokens_prompt`/`tokens_completion`, unless the delivery
is built `mismatch=True` (then only the cost differs). An error span (the client disconnected) is the root
alone, status code 2 and no `gen_ai.usage.*`, as the real one. Prompts and completions are never sent (as
with Broadcast's privacy mode). Pure: no I/O, no clock; the same row always gives the same delivery.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from openrouter_emulator.generation_record import generation_record
from openrouter_emulator.isotime import US_PER_MS
from openrouter_emulator.live_shapes import js_number
from openrouter_emulator.organisation import API_KEYS, ENDPOINTS, MEMBERS, MODELS
from openrouter_emulator.usage_day import UsageDay

ROOT_SPAN = "LLM Generation"
CONNECTION_TEST_SPAN = "openrouter-connection-test"
ERROR_MESSAGE = "The client has disconnected"
SERVICE_VERSION = "1.0.0"
_NS_PER_MS = 1_000_000
_SCOPE = {"name": "openrouter"}
# The provider slugs OpenRouter shows where the provider's name does not simply lower-case to it.
_PROVIDER_SLUGS = {"Google": "google-vertex", "Google AI Studio": "google-ai-studio",
                   "Amazon Bedrock": "amazon-bedrock"}
_RESPONSE_KEYS = ("id", "provider_name", "status", "latency", "is_byok", "endpoint_id", "model_permaslug")


def _value(value: Any, string_ints: bool) -> dict[str, Any]:
    """An OTLP AnyValue: bool, int (a JSON number as the real deliveries, or the OTLP JSON mapping's decimal
    string), double (integral ones written without a fraction, as JavaScript does) or string."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value) if string_ints else value}
    if isinstance(value, float):
        return {"doubleValue": js_number(value)}
    return {"stringValue": str(value)}


def _attributes(pairs: list[tuple[str, Any]], string_ints: bool) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value, string_ints)} for key, value in pairs if value is not None]


def _hex(gen_id: str, part: str, chars: int) -> str:
    return hashlib.sha256(f"{gen_id}:{part}".encode()).hexdigest()[:chars]


def _resource_spans(gen_id: str, span: dict[str, Any]) -> dict[str, Any]:
    resource = [("service.name", "openrouter"), ("openrouter.trace.id", gen_id), ("service.version", SERVICE_VERSION)]
    return {"resource": {"attributes": _attributes(resource, False)},
            "scopeSpans": [{"scope": dict(_SCOPE), "spans": [span]}]}


def _span(trace_id: str, span_id: str, parent: str | None, name: str, kind: int, start_ms: int, end_ms: int,
          attributes: list[dict[str, Any]], status: dict[str, Any] | None = None) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": trace_id, "spanId": span_id}
    if parent is not None:
        span["parentSpanId"] = parent
    span.update({"name": name, "kind": kind, "startTimeUnixNano": str(start_ms * _NS_PER_MS),
                 "endTimeUnixNano": str(end_ms * _NS_PER_MS), "status": status or {"code": 1},
                 "attributes": attributes})
    return span


def split_cost(total: float, completion_tokens: int, completion_usd_per_token: float) -> tuple[float, float]:
    """(input_cost, output_cost) summing exactly (in floating point) to `total`: the completion's list price,
    at most the total, and the rest as input (nudged by ulps until the sum is exact)."""
    output = round(min(total, completion_tokens * completion_usd_per_token), 9) if total > 0 else 0.0
    source = max(0.0, round(total - output, 9))
    for _ in range(64):  # the input's ulp is at most the total's, so single steps reach it
        missing = total - (source + output)
        if missing == 0:
            return source, output
        source = max(0.0, math.nextafter(source, math.inf if missing > 0 else -math.inf))
    return total, 0.0


def mismatched_cost(total: float) -> float:
    """A cost a check against the record must notice: 10% and a micro-dollar more."""
    return round(total * 1.1 + 1e-6, 9)


def completion_ms(day: UsageDay, row: int) -> int:
    """When the request completed, in ms since the epoch: created_at + generation_time (the root span's end)."""
    c = day.columns
    return int(c.created_us[row]) // US_PER_MS + round(float(c.generation_ms[row]))


def delivery(day: UsageDay, row: int, *, error: bool = False, mismatch: bool = False,
             string_ints: bool = False) -> dict[str, Any]:
    """The delivery of one generation: its root span and child spans, or (`error`) the error span alone."""
    record = generation_record(day, row)
    c = day.columns
    endpoint = ENDPOINTS[int(c.endpoint[row])]
    model = MODELS[endpoint.model]
    key = API_KEYS[int(c.api_key[row])]
    member = MEMBERS[key.member].clerk_id
    gen_id = str(record["id"])
    trace_id = _hex(gen_id, "trace", 32)
    root_id = trace_id[:16]
    start = int(c.created_us[row]) // US_PER_MS
    end = completion_ms(day, row)
    provider = str(record["provider_name"])
    head: list[tuple[str, Any]] = [("trace.name", "OpenRouter Request"), ("session.id", record["session_id"])]
    model_pairs: list[tuple[str, Any]] = [
        ("gen_ai.operation.name", "chat"), ("gen_ai.system", model.family), ("gen_ai.provider.name", model.family),
        ("gen_ai.request.model", model.slug), ("gen_ai.response.model", model.slug), ("gen_ai.response.id", gen_id)]
    who: list[tuple[str, Any]] = [
        ("trace.metadata.openrouter.source", "openrouter"), ("trace.metadata.openrouter.api_key_name", key.label),
        ("trace.metadata.openrouter.entity_id", member), ("trace.metadata.openrouter.creator_user_id", member)]
    where: list[tuple[str, Any]] = [
        ("trace.metadata.openrouter.provider_name", provider),
        ("trace.metadata.openrouter.provider_slug", _PROVIDER_SLUGS.get(provider, provider.lower().replace(" ", "-")))]
    prices: list[tuple[str, Any]] = [
        ("trace.metadata.openrouter.input_unit_price", model.prompt_usd_per_mtok / 1e6),
        ("trace.metadata.openrouter.output_unit_price", model.completion_usd_per_mtok / 1e6)]
    if error:
        pairs = [*head, ("span.type", "generation"), ("span.level", "ERROR"), ("span.status_message", ERROR_MESSAGE),
                 *model_pairs, *who, *where, *prices]
        root = _span(trace_id, root_id, None, ROOT_SPAN, 3, start, end, _attributes(pairs, string_ints),
                     {"code": 2, "message": ERROR_MESSAGE})
        root["events"] = [{"timeUnixNano": str(end * _NS_PER_MS), "name": "exception", "attributes": _attributes(
            [("exception.type", "Error"), ("exception.message", ERROR_MESSAGE)], False)}]
        return {"resourceSpans": [_resource_spans(gen_id, root)]}

    attempts = [{k: a[k] for k in _RESPONSE_KEYS if k in a and not (k == "id" and a["status"] != 200)}
                | {"latency": round(a["latency"])} for a in record["provider_responses"]]
    responses = json.dumps(attempts, separators=(",", ":"))
    total = float(record["total_cost"])
    if mismatch:
        total = mismatched_cost(total)
    prompt, completion = int(record["tokens_prompt"]), int(record["tokens_completion"])
    input_cost, output_cost = split_cost(total, completion, model.completion_usd_per_mtok / 1e6)
    cache_writes = [("gen_ai.usage.input_tokens.cache_write_5m", 0), ("gen_ai.usage.input_tokens.cache_write_1h", 0)]
    finish = record["finish_reason"]
    duration = end - start
    router = 20 + int(_hex(gen_id, "router", 4), 16) % 140
    headers_ms = min(duration, router + sum(a["latency"] for a in attempts))
    first_token = headers_ms + min(200, (duration - headers_ms) // 4)
    pairs = [
        *head, ("trace.metadata.provider_responses", responses), ("span.type", "generation"),
        ("span.level", "DEFAULT"), ("span.metadata.provider_responses", responses), *model_pairs,
        ("gen_ai.usage.input_tokens", prompt), ("gen_ai.usage.output_tokens", completion),
        ("gen_ai.usage.total_tokens", prompt + completion), ("gen_ai.usage.input_cost", input_cost),
        ("gen_ai.usage.output_cost", output_cost), ("gen_ai.usage.total_cost", total),
        ("gen_ai.usage.input_tokens.cached", int(record["native_tokens_cached"])),
        ("gen_ai.usage.input_tokens.cache_write", 0),
        *(cache_writes if model.family == "anthropic" else []),
        ("gen_ai.usage.output_tokens.reasoning", int(record["native_tokens_reasoning"])),
        *([] if model.family == "anthropic" else [("gen_ai.usage.output_tokens.image", 0)]),
        ("gen_ai.response.finish_reasons", None if finish is None else json.dumps([finish])),
        ("gen_ai.response.finish_reason", finish), *who,
        ("trace.metadata.openrouter.router_latency_ms", float(router)),
        ("trace.metadata.openrouter.provider_request_ms", float(router)),
        ("trace.metadata.openrouter.provider_headers_ms", float(headers_ms)),
        ("trace.metadata.openrouter.first_token_ms", float(first_token)),
        ("trace.metadata.openrouter.provider_body_end_ms", float(duration)),
        ("trace.metadata.openrouter.provider_time_to_first_token_ms", float(first_token - router)),
        ("trace.metadata.openrouter.inter_token_latency_ms",
         (duration - first_token) / (completion - 1) if completion > 1 else 0.0),
        *where, ("trace.metadata.openrouter.finish_reason", record["native_finish_reason"] or finish), *prices]
    spans = [_span(trace_id, root_id, None, ROOT_SPAN, 3, start, end, _attributes(pairs, string_ints))]
    at = start
    for index, attempt in enumerate(attempts):
        attempt_pairs: list[tuple[str, Any]] = [
            ("span.type", "span"), ("span.level", "DEFAULT"), ("span.metadata.attempt_index", index),
            ("span.metadata.status_code", attempt["status"]), ("span.metadata.is_byok", attempt["is_byok"]),
            ("span.metadata.endpoint_id", attempt["endpoint_id"]),
            ("span.metadata.model_permaslug", attempt["model_permaslug"]), ("gen_ai.operation.name", "chat"),
            ("gen_ai.response.id", f"{gen_id}:attempt-{index}"),
            ("trace.metadata.openrouter.provider_name", attempt["provider_name"])]
        spans.append(_span(trace_id, _hex(gen_id, f"attempt-{index}", 16), root_id,
                           f"provider attempt {index + 1}: {attempt['provider_name']}", 2, at, at + attempt["latency"],
                           _attributes(attempt_pairs, string_ints)))
        at += attempt["latency"]
    generation_pairs: list[tuple[str, Any]] = [("span.type", "span"), ("span.level", "DEFAULT"),
                                               ("gen_ai.operation.name", "chat"),
                                               ("gen_ai.response.id", f"{gen_id}:generation")]
    spans.append(_span(trace_id, _hex(gen_id, "generation", 16), root_id, "generation", 2, at, max(at, end),
                       _attributes(generation_pairs, string_ints)))
    return {"resourceSpans": [_resource_spans(gen_id, span) for span in spans]}


def connection_test(now_ms: int) -> dict[str, Any]:
    """The body Broadcast posts (with `X-Test-Connection: true`) when a destination is saved."""
    span = _span("0" * 31 + "1", "0" * 15 + "1", None, CONNECTION_TEST_SPAN, 1, now_ms, now_ms + 1, [])
    return {"resourceSpans": [{"resource": {"attributes": _attributes([("service.name", "openrouter")], False)},
                               "scopeSpans": [{"scope": dict(_SCOPE), "spans": [span]}]}]}
