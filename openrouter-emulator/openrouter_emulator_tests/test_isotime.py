"""The emulator's own ISO 8601 parser (analytics time ranges, `at` of the control API)."""

from __future__ import annotations

import datetime as dt

import pytest

from openrouter_emulator.isotime import parse_iso8601, to_epoch_us

UTC = dt.UTC


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-07-15T23:33:19.433273+00:00", dt.datetime(2024, 7, 15, 23, 33, 19, 433273, UTC)),
    ("2024-07-15T23:33:19Z", dt.datetime(2024, 7, 15, 23, 33, 19, tzinfo=UTC)),
    ("2024-07-15T23:33:19.4z", dt.datetime(2024, 7, 15, 23, 33, 19, 400000, UTC)),
    ("2024-07-15T23:33:19.123456789Z", dt.datetime(2024, 7, 15, 23, 33, 19, 123456, UTC)),  # truncated
    ("2024-07-15T23:59:59.999999999-05:00", dt.datetime(2024, 7, 16, 4, 59, 59, 999999, UTC)),
    ("2024-07-15 23:33:19+0530", dt.datetime(2024, 7, 15, 18, 3, 19, tzinfo=UTC)),
    ("2024-07-15T23:33:19", dt.datetime(2024, 7, 15, 23, 33, 19, tzinfo=UTC)),  # no offset: UTC
    ("2024-07-15T23:33:19.Z", dt.datetime(2024, 7, 15, 23, 33, 19, tzinfo=UTC)),  # 0 fractional digits
])
def test_parses_what_the_api_and_clients_send(text: str, expected: dt.datetime) -> None:
    parsed = parse_iso8601(text)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2024-07-15T23:33:19.1234567890Z", "2024-07-15T25:00:00Z",
                                  "2024-07-15T23:33:19+5"])
def test_rejects_what_is_not_a_date_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso8601(text)


def test_epoch_microseconds() -> None:
    assert to_epoch_us(parse_iso8601("1970-01-01T00:00:01.000001Z")) == 1_000_001
