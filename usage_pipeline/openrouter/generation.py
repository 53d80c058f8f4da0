"""One OpenRouter generation as the ledger stores it, parsed from `GET /generation`. The record has grown from
32 to 45 fields and will grow again, so unknown fields are ignored and nulls accepted, but types are strict."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dateutil.parser import isoparse


class InvalidGeneration(ValueError):
    """A `/generation` record that cannot be stored; the message names the id and the field."""


def parse_created_at(value: str) -> dt.datetime:
    """An ISO 8601 timestamp as an aware UTC datetime, read leniently: `Z`, an offset or none (OpenRouter's
    times are UTC), `T` or a space, any fractional digits (truncated to µs, never rounded across a day)."""
    parsed = isoparse(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # InfluxDB's integer field
FLOAT_EXACT_INT = 2**53  # beyond this an integer loses digits as a float


class _Fields:
    """Strict readers: a value of the wrong JSON type is refused by name, never coerced."""

    def __init__(self, data: Mapping[str, Any], gen_id: str) -> None:
        self.data = data
        self.gen_id = gen_id

    def refuse(self, name: str, expected: str) -> InvalidGeneration:
        shown = repr(self.data.get(name))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return InvalidGeneration(f"generation {self.gen_id}: field {name!r} must be {expected}, got {shown}")

    def number(self, name: str) -> float | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(name, "a number or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.refuse(name, "a finite number")
        if isinstance(value, int) and abs(value) > FLOAT_EXACT_INT:
            raise self.refuse(name, "a number a float holds exactly (|n| <= 2**53)")
        return float(value)

    def integer(self, name: str) -> int | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.refuse(name, "an integer or null")
        if not INT64_MIN <= value <= INT64_MAX:
            raise self.refuse(name, "an integer within 64 bits")
        return value

    def text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None or isinstance(value, str):
            return value
        raise self.refuse(name, "a string or null")

    def flag(self, name: str) -> bool | None:
        value = self.data.get(name)
        if value is None or isinstance(value, bool):
            return value
        raise self.refuse(name, "true, false or null")


@dataclass(frozen=True, slots=True)
class Generation:
    """The stored view of one generation. Identity is `id`; everything else describes it."""

    id: str
    created_at: dt.datetime
    model: str
    provider_name: str | None
    api_key: str | None  # the key as analytics' api_key_id dimension names it: its label (or hash)
    total_cost: float | None
    usage: float | None
    upstream_inference_cost: float | None
    cache_discount: float | None
    tokens_prompt: int | None
    tokens_completion: int | None
    native_tokens_prompt: int | None
    native_tokens_completion: int | None
    native_tokens_reasoning: int | None
    native_tokens_cached: int | None
    latency: float | None
    generation_time: float | None
    moderation_latency: float | None
    finish_reason: str | None
    native_finish_reason: str | None
    streamed: bool | None
    cancelled: bool | None
    is_byok: bool | None
    api_type: str | None
    app_id: int | None
    origin: str | None
    external_user: str | None
    request_id: str | None
    session_id: str | None
    upstream_id: str | None

    @classmethod
    def from_api(cls, data: Mapping[str, Any], api_key: str | None = None) -> Generation:
        """From the `data` object of a `GET /generation` answer; each field is read by its annotated type."""
        gen_id = data.get("id")
        if not isinstance(gen_id, str) or not gen_id:
            raise InvalidGeneration(f"generation record without a string id: id={gen_id!r:.80}, "
                                    f"keys={sorted(data)[:8]}")
        fields = _Fields(data, gen_id)
        created, model = data.get("created_at"), data.get("model")
        if not isinstance(created, str):
            raise fields.refuse("created_at", "an ISO 8601 date-time string")
        if not isinstance(model, str) or not model:
            raise fields.refuse("model", "a non-empty string")
        if api_key is not None and not isinstance(api_key, str):
            raise InvalidGeneration(f"generation {gen_id}: analytics api_key_id must be a string, got {api_key!r:.80}")
        try:
            created_at = parse_created_at(created)
        except (ValueError, OverflowError) as exc:  # OverflowError: an offset moving year 1 or 9999 out of range
            raise InvalidGeneration(f"generation {gen_id}: created_at {created!r:.60} "
                                    f"is not an ISO 8601 date-time ({exc})") from None
        described: dict[str, Any] = {f.name: _READERS[str(f.type)](fields, f.name) for f in dataclasses.fields(cls)
                                     if f.name not in _IDENTITY}
        return cls(id=gen_id, created_at=created_at, model=model, api_key=api_key, **described)


_IDENTITY = frozenset({"id", "created_at", "model", "api_key"})  # read above: what every record must have
_READERS = {"float | None": _Fields.number, "int | None": _Fields.integer, "str | None": _Fields.text,
            "bool | None": _Fields.flag}
