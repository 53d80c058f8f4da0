"""One Broadcast delivery (OTLP/HTTP JSON) read into the generations it announces, strictly.

OpenRouter's Broadcast sends one delivery per request: a root span `LLM Generation` and child spans
(`generation`, `provider attempt N: ...`), each in its own `resourceSpans` entry. Only the root span is an
announcement; the children repeat parts of it. The generation id is the root's `gen_ai.response.id`; its cost
and tokens (`gen_ai.usage.*`) are kept only to be checked against the record `GET /generation` answers,
which is what the ledger stores (one identity, one writer). An error span (status code 2) has no usage.

Attribute values are OTLP `AnyValue` objects. `intValue` is a decimal string by the OTLP JSON mapping and a
JSON number in the real deliveries, so both are read; anything else of the wrong type refuses the whole
delivery with a reason naming the span and attribute (a 400, never a guess). What is kept is checked here
whole, so the journal stores it exactly or never sees it: a name (model, key name) of at most MAX_NAME_CHARS
Unicode scalar values and no control character, an int64, a finite double. Pure: no I/O; tested alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROOT_SPAN = "LLM Generation"
CONNECTION_TEST_SPAN = "openrouter-connection-test"
ERROR_STATUS = 2  # OTLP STATUS_CODE_ERROR
MAX_ID_CHARS = 200
MAX_NAME_CHARS = 1024  # a model or API key name; longer is refused, never cut
INT64 = 2**63
EXACT_DOUBLE = 2**53  # a JSON integer given as a doubleValue must be this small to be one exactly
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_ID = re.compile(r"[A-Za-z0-9_:.\-]+")
_NOT_IN_A_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, lone surrogates
_VALUE_KINDS = ("stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue", "bytesValue")


class DeliveryError(ValueError):
    """A delivery that cannot be read; the message says where and why (answered as a 400)."""


@dataclass(frozen=True, slots=True)
class PushedSpan:
    """What one root span announces: the id to fetch, and the figures to check the record against."""

    id: str
    start_ns: int  # when the request started (ms precision, as nanoseconds)
    api_key_name: str | None
    model: str | None  # the slug (`gen_ai.request.model`)
    total_cost: float | None
    input_tokens: int | None
    output_tokens: int | None
    error: bool  # status code 2: the request failed (no usage is sent)


@dataclass(frozen=True)
class Delivery:
    spans: tuple[PushedSpan, ...]
    connection_test: bool
    other_spans: int  # child spans and spans of other names: read, not stored


def _integer(value: Any, where: str) -> int:
    """An OTLP int64: a JSON integer or a decimal string of one; a bool or fraction is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DeliveryError(f"{where}: intValue must be an integer or a decimal string, got {value!r:.60}")
    if isinstance(value, str):
        if not _INTEGER.fullmatch(value):
            raise DeliveryError(f"{where}: intValue must be an integer or a decimal string, got {value!r:.60}")
        value = int(value)
    if not -INT64 <= value < INT64:
        raise DeliveryError(f"{where}: intValue {value!r:.40} does not fit in 64 bits")
    return value


def _double(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DeliveryError(f"{where}: doubleValue must be a number, got {value!r:.60}")
    if isinstance(value, int) and not -EXACT_DOUBLE <= value <= EXACT_DOUBLE:
        raise DeliveryError(f"{where}: doubleValue {value!r:.40} is not exactly a 64-bit float")
    if not math.isfinite(value):
        raise DeliveryError(f"{where}: doubleValue must be finite, got {value!r:.60}")
    if value == 0 and math.copysign(1.0, value) < 0:
        raise DeliveryError(f"{where}: doubleValue -0.0 is not stored exactly (the journal keeps 0.0)")
    return float(value)


def _name(value: str | None, where: str) -> str | None:
    """A name stored as sent: refused when it is too long or holds what no name holds (SQLite cannot even
    encode a lone surrogate)."""
    if value is None:
        return None
    if len(value) > MAX_NAME_CHARS:
        raise DeliveryError(f"{where}: {len(value):,} characters, over the {MAX_NAME_CHARS:,} a name may have")
    bad = _NOT_IN_A_NAME.search(value)
    if bad is not None:
        code = ord(bad.group())
        what = "a lone surrogate (not a Unicode scalar value)" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise DeliveryError(f"{where}: holds {what}, U+{code:04X}, at character {bad.start()}")
    return value


def _attributes(items: Any, where: str) -> dict[str, Any]:
    """OTLP KeyValue list -> {key: AnyValue dict}, refusing what is not shaped like one."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise DeliveryError(f"{where}: attributes must be a list, got {type(items).__name__}")
    found: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise DeliveryError(f"{where}: an attribute must be an object with a string key, got {item!r:.60}")
        value = item.get("value")
        if not isinstance(value, Mapping) or len(value) > 1 or (value and next(iter(value)) not in _VALUE_KINDS):
            raise DeliveryError(f"{where}: attribute {item['key']!r} has no OTLP value, got {value!r:.60}")
        found[item["key"]] = value
    return found


class _Root:
    """Typed reads of one root span's attributes; a value of another kind is refused by name."""

    def __init__(self, attributes: dict[str, Any], where: str) -> None:
        self.attributes = attributes
        self.where = where

    def _value(self, key: str, kind: str) -> Any:
        value = self.attributes.get(key)
        if not value:
            return None
        if kind not in value:
            raise DeliveryError(f"{self.where}: attribute {key!r} must be a {kind}, got {value!r:.60}")
        return value[kind]

    def text(self, key: str) -> str | None:
        value = self._value(key, "stringValue")
        if value is not None and not isinstance(value, str):
            raise DeliveryError(f"{self.where}: attribute {key!r} must be a string, got {value!r:.60}")
        return value

    def name(self, key: str) -> str | None:
        return _name(self.text(key), f"{self.where}: attribute {key!r}")

    def integer(self, key: str) -> int | None:
        value = self._value(key, "intValue")
        return None if value is None else _integer(value, f"{self.where}: attribute {key!r}")

    def double(self, key: str) -> float | None:
        value = self._value(key, "doubleValue")
        return None if value is None else _double(value, f"{self.where}: attribute {key!r}")


def _root_span(span: Mapping[str, Any], where: str) -> PushedSpan:
    root = _Root(_attributes(span.get("attributes"), where), where)
    gen_id = root.text("gen_ai.response.id")
    if not gen_id:
        raise DeliveryError(f"{where}: the root span has no gen_ai.response.id (the generation id)")
    if len(gen_id) > MAX_ID_CHARS or not _ID.fullmatch(gen_id):
        raise DeliveryError(f"{where}: gen_ai.response.id {gen_id!r:.80} is not a generation id")
    start = span.get("startTimeUnixNano")
    if start is None:
        raise DeliveryError(f"{where}: the root span has no startTimeUnixNano")
    start_ns = _integer(start, f"{where}: startTimeUnixNano")
    if start_ns <= 0:
        raise DeliveryError(f"{where}: startTimeUnixNano must be positive, got {start_ns}")
    status = span.get("status") or {}
    if not isinstance(status, Mapping):
        raise DeliveryError(f"{where}: status must be an object, got {status!r:.60}")
    code = status.get("code", 0)
    if isinstance(code, bool) or not isinstance(code, int):
        raise DeliveryError(f"{where}: status.code must be an integer, got {code!r:.60}")
    return PushedSpan(id=gen_id, start_ns=start_ns, api_key_name=root.name("trace.metadata.openrouter.api_key_name"),
                      model=root.name("gen_ai.request.model"), total_cost=root.double("gen_ai.usage.total_cost"),
                      input_tokens=root.integer("gen_ai.usage.input_tokens"),
                      output_tokens=root.integer("gen_ai.usage.output_tokens"), error=code == ERROR_STATUS)


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = parent.get(key, [])
    if not isinstance(value, list):
        raise DeliveryError(f"{where}: {key} must be a list, got {type(value).__name__}")
    return value


def read_delivery(body: Any) -> Delivery:
    """The root spans of a parsed delivery body, in order; a DeliveryError for anything malformed."""
    if not isinstance(body, Mapping):
        raise DeliveryError(f"the body must be a JSON object (an OTLP ExportTraceServiceRequest), "
                            f"got {type(body).__name__}")
    if "resourceSpans" not in body:
        raise DeliveryError("the body has no resourceSpans: not an OTLP trace export")
    spans: list[PushedSpan] = []
    other, test = 0, False
    for r, resource in enumerate(_list(body, "resourceSpans", "body")):
        if not isinstance(resource, Mapping):
            raise DeliveryError(f"resourceSpans[{r}] must be an object")
        for s, scope in enumerate(_list(resource, "scopeSpans", f"resourceSpans[{r}]")):
            if not isinstance(scope, Mapping):
                raise DeliveryError(f"resourceSpans[{r}].scopeSpans[{s}] must be an object")
            for n, span in enumerate(_list(scope, "spans", f"resourceSpans[{r}].scopeSpans[{s}]")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                if not isinstance(span, Mapping) or not isinstance(span.get("name"), str):
                    raise DeliveryError(f"{where}: a span must be an object with a string name")
                if span["name"] == ROOT_SPAN:
                    spans.append(_root_span(span, where))
                else:
                    test = test or span["name"] == CONNECTION_TEST_SPAN
                    other += 1
    return Delivery(tuple(spans), connection_test=test and not spans, other_spans=other)
