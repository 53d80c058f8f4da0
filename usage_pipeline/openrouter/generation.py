"""One OpenRouter generation as the ledger stores it, parsed leniently from `GET /generation`.

The API's record has grown from 32 to 45 fields and will grow again, so parsing keeps the fields the
ledger needs, ignores unknown ones and accepts nulls wherever the spec allows them. The API key is not
part of the record: it comes from the `api_key_id` analytics dimension during enumeration.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping


class InvalidGeneration(ValueError):
    """A `/generation` record that cannot be stored; the message names the id and the field."""


def parse_created_at(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp leniently into an aware UTC datetime (microsecond precision).

    Accepts `Z` or an offset, no offset (taken as UTC), a space instead of `T`, and 0-9 fractional
    digits (digits past microseconds are truncated, never rounded across a day boundary).
    """
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Normalise the fraction to exactly 6 digits: fromisoformat on 3.10 accepts only 3 or 6.
    head, sep, rest = text.partition(".")
    if sep:
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


@dataclass(frozen=True, slots=True)
class Generation:
    """The stored view of one generation. Identity is `id`; everything else describes it."""

    id: str
    created_at: dt.datetime
    model: str
    provider_name: str | None
    api_key_id: str | None
    total_cost: float
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
    def from_api(cls, data: Mapping[str, Any], api_key_id: str | None = None) -> "Generation":
        """Build from the `data` object of a `GET /generation` response; unknown fields are ignored."""
        gen_id = data.get("id")
        if not gen_id:
            raise InvalidGeneration(f"generation record without an id: keys={sorted(data)[:8]}")
        try:
            created = data["created_at"]
            model = data["model"]
            if not model:
                raise KeyError("model")
            return cls(
                id=str(gen_id),
                created_at=parse_created_at(str(created)),
                model=str(model),
                provider_name=_opt_str(data.get("provider_name")),
                api_key_id=_opt_str(api_key_id),
                total_cost=float(data.get("total_cost") or 0.0),
                usage=_opt_float(data.get("usage")),
                upstream_inference_cost=_opt_float(data.get("upstream_inference_cost")),
                cache_discount=_opt_float(data.get("cache_discount")),
                tokens_prompt=_opt_int(data.get("tokens_prompt")),
                tokens_completion=_opt_int(data.get("tokens_completion")),
                native_tokens_prompt=_opt_int(data.get("native_tokens_prompt")),
                native_tokens_completion=_opt_int(data.get("native_tokens_completion")),
                native_tokens_reasoning=_opt_int(data.get("native_tokens_reasoning")),
                native_tokens_cached=_opt_int(data.get("native_tokens_cached")),
                latency=_opt_float(data.get("latency")),
                generation_time=_opt_float(data.get("generation_time")),
                moderation_latency=_opt_float(data.get("moderation_latency")),
                finish_reason=_opt_str(data.get("finish_reason")),
                native_finish_reason=_opt_str(data.get("native_finish_reason")),
                streamed=_opt_bool(data.get("streamed")),
                cancelled=_opt_bool(data.get("cancelled")),
                is_byok=_opt_bool(data.get("is_byok")),
                api_type=_opt_str(data.get("api_type")),
                app_id=_opt_int(data.get("app_id")),
                origin=_opt_str(data.get("origin")),
                external_user=_opt_str(data.get("external_user")),
                request_id=_opt_str(data.get("request_id")),
                session_id=_opt_str(data.get("session_id")),
                upstream_id=_opt_str(data.get("upstream_id")),
            )
        except KeyError as exc:
            raise InvalidGeneration(f"generation {gen_id}: required field {exc.args[0]!r} is missing") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidGeneration(f"generation {gen_id}: {exc}") from exc
