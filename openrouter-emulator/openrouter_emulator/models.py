"""`GET /models`: the emulator's models in the spec's `Model` shape.

It is the one place the real API names a model all three ways: `id` (the slug `GET /generation`
answers), `canonical_slug` (the permaslug analytics filters take) and `name` (the label analytics
answers), so clients can bridge label-named analytics to slug-named generations.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

from openrouter_emulator.organisation import MODELS, Model

# family -> (tokenizer of the spec's ModelGroup enum, context length in tokens)
_FAMILIES: dict[str, tuple[str, int]] = {
    "openai": ("GPT", 1_047_576), "anthropic": ("Claude", 200_000), "google": ("Gemini", 1_048_576),
    "meta-llama": ("Llama3", 131_072), "mistralai": ("Mistral", 131_072), "deepseek": ("DeepSeek", 163_840),
    "qwen": ("Qwen3", 262_144), "x-ai": ("Grok", 131_072),
}
_PARAMETERS = ["max_tokens", "temperature", "top_p", "stop", "seed", "response_format", "tools", "tool_choice"]
_EPOCH_2024 = int(dt.datetime(2024, 6, 1, tzinfo=dt.UTC).timestamp())


def _per_token(usd_per_mtok: float) -> str:
    """USD per token as the API writes prices: a decimal string such as "0.000002"."""
    return format((Decimal(str(usd_per_mtok)) / Decimal(1_000_000)).normalize(), "f")


def _created(model: Model) -> int:
    """A stable creation time in 2024-2025, from the permaslug alone."""
    offset = int(hashlib.sha256(model.permaslug.encode()).hexdigest()[:8], 16) % (365 * 86_400)
    return _EPOCH_2024 + offset


def model_entry(model: Model) -> dict[str, Any]:
    tokenizer, context = _FAMILIES.get(model.family, ("Other", 131_072))
    pricing = {"prompt": _per_token(model.prompt_usd_per_mtok),
               "completion": _per_token(model.completion_usd_per_mtok), "request": "0", "image": "0"}
    if model.caching:
        pricing["input_cache_read"] = _per_token(model.prompt_usd_per_mtok * 0.25)
    entry: dict[str, Any] = {
        "id": model.slug,
        "canonical_slug": model.permaslug,
        "hugging_face_id": None,
        "name": model.name,
        "created": _created(model),
        "description": f"{model.name}, served by {', '.join(p for p, _ in model.providers)}.",
        "context_length": context,
        "architecture": {"modality": "text->text", "input_modalities": ["text"], "output_modalities": ["text"],
                         "tokenizer": tokenizer, "instruct_type": None},
        "pricing": pricing,
        "top_provider": {"context_length": context, "max_completion_tokens": 32_768,
                         "is_moderated": model.family == "openai"},
        "per_request_limits": None,
        "supported_parameters": _PARAMETERS + (["reasoning", "include_reasoning"] if model.reasoning else []),
        "default_parameters": None,
        "supported_voices": None,
        "expiration_date": None,
        "knowledge_cutoff": None,
        "links": {"details": f"/api/v1/models/{model.slug}/endpoints"},
    }
    if model.reasoning:
        entry["reasoning"] = {"mandatory": False, "default_enabled": True, "default_effort": "medium",
                              "supported_efforts": ["high", "medium", "low"]}
    return entry


def models_list() -> dict[str, Any]:
    """The whole list, as `GET /models` answers when neither offset nor limit is given."""
    return {"data": [model_entry(m) for m in MODELS], "total_count": len(MODELS), "links": {"next": None}}
