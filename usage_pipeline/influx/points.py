"""The `generations` schema: one InfluxDB point per OpenRouter generation, as line protocol.

InfluxDB silently overwrites a point with the same measurement, tags and timestamp. That overwrite is the
ledger's upsert, so the identity must be stable: tags are only `model` and `provider` (bounded cardinality,
never the id), and the timestamp is `created_at` (µs) plus a rank keeping generations that share a µs apart
(`ranks.place`). influxdb-client's `Point` writes the fields and timestamp, carrying every value exactly. The
series key is escaped here, as 1.x stores `Point`'s escapes of a tab, CR or newline in a tag literally; a tag
1.x cannot carry at all (a newline, a trailing backslash, a backslash before a space) is refused by id (tests
hold both against influxd 1.6.7).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from influxdb_client import Point

from usage_pipeline.openrouter.generation import Generation

MEASUREMENT = "generations"
TAGS: tuple[str, ...] = ("model", "provider")
RANKS_PER_MICROSECOND = 1000

# Field name -> Python type. The type is fixed forever: InfluxDB rejects a later write of another type.
FIELD_TYPES: dict[str, type] = {
    "generation_id": str,
    "total_cost": float, "usage": float, "upstream_inference_cost": float, "cache_discount": float,
    "latency": float, "generation_time": float, "moderation_latency": float,
    "tokens_prompt": int, "tokens_completion": int, "native_tokens_prompt": int, "native_tokens_completion": int,
    "native_tokens_reasoning": int, "native_tokens_cached": int, "app_id": int,
    "finish_reason": str, "native_finish_reason": str, "api_type": str, "origin": str, "external_user": str,
    "api_key": str, "request_id": str, "session_id": str, "upstream_id": str,
    "streamed": bool, "cancelled": bool, "is_byok": bool,
}
_SOURCE_ATTR = {name: "id" if name == "generation_id" else name for name in FIELD_TYPES}

# InfluxDB 1.x refuses a point whose storage key (series key + "#!~#" + field key) exceeds 65,535 bytes
# ("max key length exceeded", checked against influxd 1.6.7): the series key must leave room for the
# longest field key.
MAX_KEY_BYTES = 65_535
MAX_SERIES_KEY_BYTES = MAX_KEY_BYTES - len("#!~#") - max(len(name) for name in FIELD_TYPES)
_TAG_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Key = tuple[str, str | None, int]  # model, provider tag (None when absent), created_at in µs since the epoch


def microseconds_since_epoch(created_at: dt.datetime) -> int:
    """Exact integer µs since the epoch (no float rounding, which could move a point across a day)."""
    if created_at.tzinfo is None:
        raise ValueError(f"created_at must be timezone-aware, got naive {created_at.isoformat()}")
    delta = created_at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def point_time_ns(created_at: dt.datetime, rank: int) -> int:
    """The point's timestamp: `created_at` truncated to the µs, in ns, plus `rank` (0..999), so the point
    always stays inside created_at's µs and UTC day."""
    if not 0 <= rank < RANKS_PER_MICROSECOND:
        raise ValueError(f"rank {rank} is outside 0..{RANKS_PER_MICROSECOND - 1}")
    return microseconds_since_epoch(created_at) * 1000 + rank


def identity_key(generation: Generation) -> Key:
    """(model, provider tag, µs): what generations sharing a point's timestamp range have in common. Line
    protocol drops an empty tag, so "" and None are one identity."""
    return generation.model, generation.provider_name or None, microseconds_since_epoch(generation.created_at)


def _tag(name: str, value: str) -> str:
    """`name=value`, escaped for 1.x, or ValueError naming what 1.x cannot carry."""
    if "\n" in value:
        problem = "a newline (it would end the line)"
    elif value.endswith("\\"):
        problem = "a trailing backslash (it would escape the separator after it)"
    elif "\\ " in value:  # escaped, `\ ` becomes `\\ `, which 1.x's line splitter and tag parser read two ways
        problem = "a backslash before a space (influxd 1.x reads its escape two ways)"
    else:
        return f"{name}={value.translate(_TAG_ESCAPES)}"
    raise ValueError(f"tag {name!r} {value!r:.80} contains {problem}, which line protocol cannot carry")


def series_key(generation: Generation) -> str:
    """`generations,model=...[,provider=...]`: the measurement and tags of the generation's point."""
    if generation.provider_name == "":
        raise ValueError("provider_name is an empty string, which a tag cannot carry (InfluxDB drops empty tags, "
                         "so it would read back as null)")
    tags = [_tag("model", generation.model)]
    if generation.provider_name is not None:
        tags.append(_tag("provider", generation.provider_name))
    key = ",".join([MEASUREMENT, *tags])
    if len(key) * 4 > MAX_SERIES_KEY_BYTES and len(key.encode("utf-8")) > MAX_SERIES_KEY_BYTES:
        raise ValueError(f"its model and provider make a series key over InfluxDB's {MAX_KEY_BYTES}-byte key limit "
                         f"(model: {len(generation.model.encode('utf-8'))} bytes)")
    return key


def point_body(generation: Generation) -> str:
    """The point without its timestamp, `generations,<tags> <fields>`: what does not depend on the rank.
    ValueError saying why when line protocol cannot carry it exactly.

    Each value is written as its field's type (an integral float stays a float), and a NaN or infinity is
    refused here: `Point` would silently leave the field out."""
    point = Point(MEASUREMENT)
    for name, attr in _SOURCE_ATTR.items():
        value = getattr(generation, attr)
        if value is not None:
            value = FIELD_TYPES[name](value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field {name!r} is {value!r}: line protocol has no NaN or infinity")
        point.field(name, value)
    return series_key(generation) + point.to_line_protocol()[len(MEASUREMENT):]  # Point's tag set is empty: " fields"


def to_line(generation: Generation, rank: int) -> str:
    """The generation's point at `rank`."""
    return f"{point_body(generation)} {point_time_ns(generation.created_at, rank)}"


class Bodies:
    """Point bodies made as each record arrives, not all at once when its window is written: Point costs about
    120 µs a record, and 10,000 of them at once would hold the event loop's fetches back for a second."""

    def __init__(self) -> None:
        self._made: dict[str, str | ValueError] = {}

    def add(self, generation: Generation) -> None:
        try:
            self._made[generation.id] = point_body(generation)
        except ValueError as exc:
            self._made[generation.id] = exc

    def line(self, generation: Generation, rank: int) -> str:
        made = self._made.get(generation.id)
        if made is None:
            made = point_body(generation)
        elif isinstance(made, ValueError):
            raise made
        return f"{made} {point_time_ns(generation.created_at, rank)}"


@dataclass
class EncodedBatch:
    """Lines ready to write, the generation id of each, and the generations line protocol cannot carry."""

    lines: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # generation id -> why


def encode(generations: Sequence[Generation], ranks: Mapping[str, int], bodies: Bodies | None = None) -> EncodedBatch:
    """Each ranked generation's line, or its refusal by id: a record is stored exactly or not at all."""
    batch = EncodedBatch()
    bodies = bodies or Bodies()
    for generation in generations:
        if generation.id not in ranks:
            continue
        try:
            line = bodies.line(generation, ranks[generation.id])
        except ValueError as exc:
            batch.refused[generation.id] = str(exc)[:300]
            continue
        batch.lines.append(line)
        batch.ids.append(generation.id)
    return batch
