"""Hostile values from OpenRouter: each is stored byte for byte, or its record is refused by id with the
reason. Nothing is coerced or altered on the way in (strict parsing, then a real influxd read back)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Hashable, Iterator
from typing import Any

import pandas as pd
import pytest

from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.generation import Generation, InvalidGeneration

DAY = dt.date(2025, 4, 2)
BIG = "x" * 65_536  # 64 KB

HOSTILE_TEXT: dict[str, str] = {
    "backslash": "a\\b",
    "trailing backslash": "acme\\",
    "backslash before space": "a\\ b",
    "double quote": 'say "hi"',
    "single quote": "it's",
    "comma": "a,b",
    "equals": "a=b",
    "space": "a b",
    "newline": "line1\nline2",
    "tab": "a\tb",
    "carriage return": "a\rb",
    "emoji": "🤖 model ✨",
    "rtl": "مرحبا بالعالم",
    "empty": "",
    "64 KB": BIG,
}


def record(gen_id: str, second: int, **overrides: Any) -> dict[str, Any]:
    """A `GET /generation` data object, as JSON would give it."""
    created = dt.datetime(DAY.year, DAY.month, DAY.day, 12, 0, second, tzinfo=dt.UTC)
    data: dict[str, Any] = {
        "id": gen_id, "created_at": created.isoformat(), "model": "openai/gpt-4.1", "provider_name": "OpenAI",
        "total_cost": 0.00123, "usage": 0.00123, "tokens_prompt": 120, "tokens_completion": 30,
        "latency": 812.5, "generation_time": 640.0, "finish_reason": "stop", "streamed": True,
        "cancelled": False, "is_byok": False, "external_user": "cust_1", "origin": "", "app_id": 42,
    }
    data.update(overrides)
    return data


@pytest.fixture()
def store(influxd: LocalInfluxd) -> Iterator[InfluxStore]:
    with InfluxStore(InfluxSettings(url=influxd.url, database=f"hostile_{uuid.uuid4().hex[:8]}")) as s:
        s.ensure_database()
        yield s


def stored(store: InfluxStore) -> dict[str, dict[Hashable, Any]]:
    """Every point of the day by generation id, as InfluxDB returns it."""
    rows: dict[str, dict[Hashable, Any]] = {}
    for frame in store.iter_day_frames(DAY):
        for row in frame.to_dict("records"):
            rows[row["generation_id"]] = row
    return rows


@pytest.mark.parametrize("place", ["model", "provider_name", "external_user", "finish_reason"])
def test_every_hostile_string_round_trips_byte_for_byte_or_is_refused_by_id(store: InfluxStore, place: str) -> None:
    generations, ids, refused = [], {}, {}
    for n, (name, value) in enumerate(HOSTILE_TEXT.items()):
        gen_id = f"gen-{place}-{n}"
        ids[gen_id] = name
        try:
            generations.append(Generation.from_api(record(gen_id, n, **{place: value})))
        except InvalidGeneration as exc:  # the record itself is refused (an empty model)
            assert gen_id in str(exc)
            refused[gen_id] = str(exc)
    result = store.write_generations(generations)
    refused.update(result.refused)
    rows = stored(store)
    column = {"provider_name": "provider"}.get(place, place)
    for gen_id, name in ids.items():
        sent = HOSTILE_TEXT[name]
        if gen_id in refused:
            assert gen_id not in rows, f"{name}: refused but stored"
            assert refused[gen_id], f"{name}: refused without a reason"
        else:
            assert gen_id in rows, f"{name}: neither stored nor refused"
            back = rows[gen_id][column]
            assert isinstance(back, str) and back.encode("utf-8") == sent.encode("utf-8"), \
                f"{name} came back {back!r:.60}"
    # What line protocol cannot carry in a tag is refused; a string field carries everything.
    if place in ("model", "provider_name"):
        names = {ids[i] for i in refused}
        assert {"trailing backslash", "backslash before space", "newline", "64 KB"} <= names
        assert "empty" in names  # an empty tag would read back as null
        assert not names & {"backslash", "double quote", "comma", "equals", "space", "tab", "carriage return",
                              "emoji", "rtl", "single quote"}
    else:
        assert not refused
    assert result.written + len(refused) == len(HOSTILE_TEXT)


WRONG_TYPES: dict[str, tuple[str, Any]] = {
    "string for a boolean": ("streamed", "false"),
    "number for a boolean": ("is_byok", 0),
    "fraction for a count": ("tokens_prompt", 1.9),
    "whole float for a count": ("tokens_completion", 2.0),
    "string for a count": ("tokens_prompt", "120"),
    "boolean for a count": ("app_id", True),
    "count beyond 64 bits": ("tokens_prompt", 2**63),
    "NaN cost": ("total_cost", math.nan),
    "infinite latency": ("latency", math.inf),
    "cost losing digits": ("total_cost", 2**63),
    "string for a cost": ("usage", "0.1"),
    "number for a string": ("finish_reason", 7),
    "list for a string": ("external_user", ["a"]),
    "number for the model": ("model", 5),
    "empty model": ("model", ""),
    "number for created_at": ("created_at", 1_700_000_000),
}


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_a_field_of_the_wrong_json_type_refuses_the_record_by_id_field_and_value(case: str) -> None:
    name, value = WRONG_TYPES[case]
    with pytest.raises(InvalidGeneration) as refused:
        Generation.from_api(record("gen-typed", 1, **{name: value}))
    message = str(refused.value)
    assert "gen-typed" in message and repr(name) in message
    assert repr(value)[:20] in message


UTC = dt.UTC
CREATED_AT: dict[str, tuple[str, dt.datetime]] = {
    "OpenRouter's own form": ("2025-04-02T23:33:19.433273+00:00", dt.datetime(2025, 4, 2, 23, 33, 19, 433273, UTC)),
    "nanoseconds truncated": ("2025-04-02T23:33:19.433273999+00:00", dt.datetime(2025, 4, 2, 23, 33, 19, 433273, UTC)),
    "not rounded to the next day": ("2025-04-02T23:59:59.9999999Z", dt.datetime(2025, 4, 2, 23, 59, 59, 999999, UTC)),
    "an offset, converted to UTC": ("2025-04-03T01:33:19.5+02:00", dt.datetime(2025, 4, 2, 23, 33, 19, 500000, UTC)),
    "Z, no fraction": ("2025-04-02T12:00:00Z", dt.datetime(2025, 4, 2, 12, 0, 0, 0, UTC)),
    "a space for T": ("2025-04-02 12:00:00.25+00:00", dt.datetime(2025, 4, 2, 12, 0, 0, 250000, UTC)),
    "no offset, taken as UTC": ("2025-04-02T12:00:00.000001", dt.datetime(2025, 4, 2, 12, 0, 0, 1, UTC)),
}


@pytest.mark.parametrize("case", CREATED_AT, ids=list(CREATED_AT))
def test_created_at_is_read_as_utc_to_the_microsecond(case: str) -> None:
    text, expected = CREATED_AT[case]
    created_at = Generation.from_api(record("gen-time", 1, created_at=text)).created_at
    assert created_at == expected and created_at.utcoffset() == dt.timedelta(0)


NOT_ISO_8601 = ["", "not a date", "2025-13-02T12:00:00Z", "2025-04-02T12:00:00+00:00 junk", "02/04/2025 12:00",
                "0001-01-01T00:00:00+01:00"]  # the last one is out of range once moved to UTC


@pytest.mark.parametrize("text", NOT_ISO_8601)
def test_a_created_at_that_is_not_iso_8601_refuses_the_record_by_id_and_field(text: str) -> None:
    with pytest.raises(InvalidGeneration) as refused:
        Generation.from_api(record("gen-badtime", 1, created_at=text))
    message = str(refused.value)
    assert message.startswith(f"generation gen-badtime: created_at {text!r} is not an ISO 8601 date-time")


def test_values_of_the_right_type_are_kept_exactly(store: InfluxStore) -> None:
    exact = record("gen-exact", 1, total_cost=0.1 + 0.2, tokens_prompt=2**62, latency=5, streamed=False,
                   usage=None, origin="", external_user=None, upstream_inference_cost=2**53)
    generation = Generation.from_api(exact)
    assert generation.tokens_prompt == 2**62 and generation.latency == 5.0 and generation.origin == ""
    assert store.write_generations([generation]).written == 1
    row = stored(store)["gen-exact"]
    assert row["total_cost"] == 0.1 + 0.2 and row["tokens_prompt"] == 2**62 and not pd.isna(row["streamed"])
    assert not row["streamed"] and row["origin"] == "" and row["upstream_inference_cost"] == 2**53
    assert pd.isna(row["usage"])


def test_a_day_with_hostile_records_writes_the_rest_and_fails_naming_each(influxd: LocalInfluxd,
                                                                          tmp_path) -> None:  # noqa: ANN001
    """Through the ledger: OpenRouter answers a string for a boolean, NaN for a latency, a fraction of a
    token, and a model no tag can carry; the day writes everything else and fails naming those four."""
    from openrouter_emulator.process import run_emulator
    from usage_pipeline.ledger import record_day
    from usage_pipeline_tests.conftest import settings_for, yesterday

    day = yesterday()
    with run_emulator(seed=61, generations_per_day=200, days=1, log_path=tmp_path / "emu.log") as server:
        ids = server.truth(day)["ids"]
        hostile: dict[str, dict[str, Any]] = {
            ids[0]: {"streamed": "false"}, ids[1]: {"latency": math.nan}, ids[2]: {"tokens_prompt": 1.9},
            ids[3]: {"model": "acme\\"}, ids[4]: {"external_user": "line\nbreak \"quoted\" \\ ,="}}
        server.override_records(hostile)
        with InfluxStore(InfluxSettings(url=influxd.url, database=f"hostile_{uuid.uuid4().hex[:8]}")) as store:
            store.ensure_database()
            recording = record_day(settings_for(server), store.settings, day)
            counts = store.day_counts(day)
            back = {row["generation_id"]: row for frame in store.iter_day_frames(day)
                    for row in frame.to_dict("records")}
    assert not recording.complete
    assert recording.recorded.written == counts.distinct_ids == len(ids) - 4
    invalid = " | ".join(recording.recorded.invalid.values())
    assert f"generation {ids[0]}: field 'streamed'" in invalid and "'false'" in invalid
    assert f"generation {ids[1]}: field 'latency' must be a finite number, got nan" in invalid
    assert f"generation {ids[2]}: field 'tokens_prompt' must be an integer or null, got 1.9" in invalid
    assert set(recording.refused) == {ids[3]} and "trailing backslash" in recording.refused[ids[3]]
    assert back[ids[4]]["external_user"] == hostile[ids[4]]["external_user"]  # stored exactly
    message = recording.problems()
    assert all(gen_id in message for gen_id in ids[:4])
