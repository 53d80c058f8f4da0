"""The points as line protocol: influxdb_client's Point wherever it is right, the series key escaped here where
it is not, and every value read back exactly from a real influxd 1.6.7 where it matters most (awkward tags and
strings, float bits)."""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import struct
from typing import Any

import pytest
from influxdb_client import Point, WritePrecision

from usage_pipeline.influx.points import _SOURCE_ATTR, FIELD_TYPES, MEASUREMENT, encode, point_time_ns, to_line
from usage_pipeline.influx.ranks import place
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.generation import Generation

UTC = dt.UTC
DAY = dt.date(2025, 4, 2)
DAY_START = dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
SOURCE = _SOURCE_ATTR  # field -> Generation attribute
FLOAT_FIELDS = [name for name, kind in FIELD_TYPES.items() if kind is float]

# Everything line protocol escapes or that could confuse a parser, plus multi-byte text.
AWKWARD = [" ", ",", "=", '"', "\\", "'", "#", "{", "}", "é", "中", "😀", "\u00a0", "a", "Z", "0", "/", "-", "."]
CONTROL = ["\n", "\t", "\r"]


def text(rng: random.Random, *, tag: bool) -> str:
    """Random awkward text. A tag never has what 1.x cannot carry (a newline, a trailing backslash, a backslash
    before a space) nor what Point writes wrongly (a tab or CR). String fields may have all of them."""
    chars = AWKWARD if tag else AWKWARD + CONTROL
    value = "".join(rng.choice(chars) for _ in range(rng.randint(1, 14)))
    if tag:
        value = value.replace("\\ ", "\\x")
        if value.endswith("\\"):
            value += "x"
    return value


def random_float(rng: random.Random) -> float | int:
    pick = rng.randrange(6)
    if pick == 0:
        return rng.uniform(-1e6, 1e6)
    if pick == 1:  # any finite double, subnormals and extremes included
        while True:
            value: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(value):
                return value
    if pick == 2:
        return float(rng.randrange(-10**6, 10**6))  # integral: written without ".0"
    if pick == 3:
        return rng.choice([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1 + 0.2, 1e16, 1e-7])
    if pick == 4:
        return rng.randrange(-1000, 1000)  # an int in a float field is still written as a float
    return rng.random() * 10 ** rng.randint(-12, 3)


def random_value(rng: random.Random, kind: type) -> Any:
    if kind is float:
        return random_float(rng)
    if kind is int:
        return rng.choice([rng.randrange(-(2**63), 2**63), rng.randrange(0, 100_000), 0, True])
    if kind is bool:
        return rng.choice([True, False, 0, 1])
    return rng.choice([text(rng, tag=False), text(rng, tag=False), "", 42])  # str() of a stray int


def random_generations(rng: random.Random, count: int) -> list[Generation]:
    """Awkward generations over one day; about a fifth share a few µs, so ranks above 0 are exercised."""
    shared = [rng.randrange(86_400 * 10**6) for _ in range(5)]
    models = [text(rng, tag=True) for _ in range(6)]
    providers: list[str | None] = [text(rng, tag=True) for _ in range(4)] + [None]
    out = []
    for i in range(count):
        micros = rng.choice(shared) if rng.random() < 0.2 else rng.randrange(86_400 * 10**6)
        values: dict[str, Any] = {
            "id": f"gen-{i:05d}-{text(rng, tag=False)}",
            "created_at": DAY_START + dt.timedelta(microseconds=micros),
            "model": rng.choice(models),
            "provider_name": rng.choice(providers),
        }
        for name, kind in FIELD_TYPES.items():
            attr = SOURCE.get(name, name)
            if attr not in values:
                values[attr] = None if name != "total_cost" and rng.random() < 0.2 else random_value(rng, kind)
        out.append(Generation(**values))
    return out


# ---- the lines on their own (no server) ----------------------------------------------------------------


def point_line(generation: Generation, rank: int) -> str:
    """The reference: the whole line built with influxdb_client's Point, tags included."""
    point = Point(MEASUREMENT).tag("model", generation.model)
    if generation.provider_name:
        point.tag("provider", generation.provider_name)
    for name in FIELD_TYPES:
        value = getattr(generation, SOURCE.get(name, name))
        point.field(name, None if value is None else FIELD_TYPES[name](value))
    return point.time(point_time_ns(generation.created_at, rank), WritePrecision.NS).to_line_protocol()


@pytest.mark.pure
def test_lines_are_points_own_where_point_is_right() -> None:
    """Tags without a tab or CR (which Point writes as backslash sequences 1.x stores as such): the whole line
    is exactly Point's, for every awkward value of every field type."""
    for generation in random_generations(random.Random(7), 3000):
        assert to_line(generation, 3) == point_line(generation, 3)


@pytest.mark.pure
def test_tabs_and_crs_in_tags_are_written_raw_where_point_would_change_them() -> None:
    generation = Generation(**{**_as_dict(random_generations(random.Random(1), 1)[0]), "model": "a\tb\rc",
                               "provider_name": "x y"})
    line = to_line(generation, 0)
    assert line.startswith("generations,model=a\tb\rc,provider=x\\ y ")
    assert point_line(generation, 0).startswith("generations,model=a\\tb\\rc,")  # Point: a literal backslash-t


@pytest.mark.pure
def test_non_finite_floats_are_refused_naming_the_field_not_dropped_as_point_does() -> None:
    base = random_generations(random.Random(3), 1)[0]
    for name in FLOAT_FIELDS:
        for bad in (math.nan, math.inf, -math.inf):
            generation = Generation(**{**_as_dict(base), SOURCE.get(name, name): bad})
            assert not re.search(rf"[ ,]{name}=", point_line(generation, 0))  # Point leaves it out without a word
            with pytest.raises(ValueError, match=rf"field '{name}' is {bad!r}: line protocol has no NaN or infinity"):
                to_line(generation, 0)
            batch = encode([generation], {generation.id: 0})
            assert not batch.lines and f"field '{name}'" in batch.refused[generation.id]


@pytest.mark.pure
@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("gpt\n4", "a newline"),
        ("gpt-4\\", "a trailing backslash"),
        ("gpt\\ 4", "a backslash before a space"),
    ],
)
def test_tags_1x_cannot_carry_are_refused_instead_of_writing_another_value(model: str, problem: str) -> None:
    generation = Generation(**{**_as_dict(random_generations(random.Random(4), 1)[0]), "model": model})
    with pytest.raises(ValueError, match=re.escape(f"tag 'model' {model!r} contains {problem}")):
        to_line(generation, 0)


@pytest.mark.pure
def test_an_empty_provider_and_an_oversized_series_key_are_refused() -> None:
    base = _as_dict(random_generations(random.Random(8), 1)[0])
    with pytest.raises(ValueError, match="provider_name is an empty string"):
        to_line(Generation(**{**base, "provider_name": ""}), 0)
    with pytest.raises(ValueError, match="65535-byte key limit"):
        to_line(Generation(**{**base, "model": "m" * 65_510}), 0)
    assert to_line(Generation(**{**base, "model": "m" * 60_000}), 0)


def _as_dict(generation: Generation) -> dict[str, Any]:
    return {name: getattr(generation, name) for name in Generation.__dataclass_fields__}


# ---- through a real influxd ----------------------------------------------------------------------------


def read_back(store: InfluxStore) -> dict[str, dict[str, Any]]:
    """Every point of the measurement as {column: value}, keyed by generation_id (raw /query JSON values)."""
    rows: dict[str, dict[str, Any]] = {}
    for series in store.query(f'SELECT * FROM "{MEASUREMENT}"'):
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=False))
            rows[row["generation_id"]] = row
    return rows


def float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def test_awkward_tags_and_strings_round_trip_exactly(store: InfluxStore) -> None:
    generations = random_generations(random.Random(11), 1500)
    rng = random.Random(12)
    fixed: dict[str, list[str | None]] = {
        "model": ["a b", "a,b", "a=b", 'a"b', "a\\b", "a\\,b", "a\\=b", "a\\\\b", "é 中 😀", " lead", "#x", "\tt\r"],
        "provider_name": ["Open AI", "x,y=z", '"q"', "back\\slash", "😀", None],
    }
    awkward = [
        Generation(**{
            **_as_dict(g),
            "model": fixed["model"][i % len(fixed["model"])],
            "provider_name": fixed["provider_name"][i % len(fixed["provider_name"])],
            "external_user": ['a "b"\\ c', "line\nbreak", "tab\tcr\r", "trailing\\", "😀,= é"][i % 5],
            "finish_reason": "".join(rng.choice(AWKWARD + CONTROL) for _ in range(30)),
        })
        for i, g in enumerate(generations[:100])
    ]
    window = awkward + generations[100:]
    result = store.write_generations(window, batch_size=400)
    assert result.written == len(window) and not result.refused

    rows = read_back(store)
    assert len(rows) == len(window)
    ranks = place(window, []).ranks
    times = [point_time_ns(g.created_at, ranks[g.id]) for g in window]
    for generation, time_ns in zip(window, times, strict=True):
        row = rows[generation.id]
        assert row["model"] == generation.model
        assert row["provider"] == (generation.provider_name or None)
        assert row["time"] == time_ns
        for name, kind in FIELD_TYPES.items():
            expected = getattr(generation, SOURCE.get(name, name))
            got = row[name]
            if expected is None:
                assert got is None, name
            elif kind is float:  # JSON writes integral floats as integers; the bits must still match
                assert float_bits(float(got)) == float_bits(float(expected)) or float(expected) == 0.0, name
            else:
                assert type(got) is kind and got == kind(expected), name


def test_floats_read_back_bit_identical(store: InfluxStore) -> None:
    values = [0.1 + 0.2, 1 / 3, 2 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e-300,
              123456789.12345679, 0.1, 1e16, 9007199254740993.0, -2.5e-7, 299792.458]
    start = DAY_START + dt.timedelta(hours=1)
    base = random_generations(random.Random(5), 1)[0]
    generations = [
        Generation(**{**_as_dict(base), "id": f"f{i:03d}", "created_at": start + dt.timedelta(seconds=i),
                      "total_cost": value, "usage": -value, "latency": value / 7})
        for i, value in enumerate(values)
    ]
    store.write_generations(generations)
    rows = read_back(store)
    for i, value in enumerate(values):
        row = rows[f"f{i:03d}"]
        for name, expected in (("total_cost", value), ("usage", -value), ("latency", value / 7)):
            assert float_bits(float(row[name])) == float_bits(expected), (name, expected, row[name])
    assert rows["f000"]["total_cost"] == 0.30000000000000004


def test_a_non_finite_float_is_refused_by_id_and_nothing_else_is_lost(store: InfluxStore) -> None:
    good = random_generations(random.Random(6), 20)
    bad = Generation(**{**_as_dict(good[0]), "id": "bad", "latency": math.nan})
    result = store.write_generations([*good, bad])
    assert set(result.refused) == {"bad"} and "field 'latency' is nan" in result.refused["bad"]
    assert store.day_counts(DAY) == DayCounts(points=20, distinct_ids=20)
