"""One `GET /generation` answer read as what it says (pure), and each record's retry budget."""

from __future__ import annotations

import email.utils
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usage_pipeline.openrouter.records import MAX_WAIT_S, Kind, RecordRetries, read_answer, retry_after_seconds

pytestmark = pytest.mark.pure

NOW = 1_800_000_000.0
RECORD = json.dumps({"data": {"id": "gen-1", "model": "m"}}).encode()
NOT_FOUND = b'{"error":{"message":"Generation gen-1 not found","code":404}}'  # real-payloads/errors/01
CDN_PAGE = b"<!DOCTYPE html><html><title>Error 1015</title></html>"


@pytest.mark.parametrize(("status", "headers", "body", "kind", "exhausted"), [
    (200, {}, RECORD, Kind.RECORD, False),
    (200, {}, b'{"data": null}', Kind.TRANSIENT, False),  # a 200 without a record is not a record
    (200, {"Content-Type": "text/html"}, CDN_PAGE, Kind.TRANSIENT, False),
    (404, {}, NOT_FOUND, Kind.NOT_FOUND, False),
    (429, {"Retry-After": "1"}, b"{}", Kind.THROTTLED, False),  # lone: its own request waits
    (429, {"X-RateLimit-Remaining": "0"}, b"{}", Kind.THROTTLED, True),  # the account's budget is spent
    (429, {"X-RateLimit-Reset": str(int(NOW * 1000) + 400)}, b"{}", Kind.THROTTLED, True),
    (429, {"Content-Type": "text/html"}, CDN_PAGE, Kind.THROTTLED, False),
    (503, {"Retry-After": "2"}, b"{}", Kind.TRANSIENT, False),
    (520, {}, CDN_PAGE, Kind.TRANSIENT, False),
    (401, {}, b'{"error":{"message":"No auth credentials found","code":401}}', Kind.AUTH, False),
    (403, {}, b"{}", Kind.AUTH, False),
    (400, {}, b'{"error":{"message":"bad id"}}', Kind.REFUSED, False),
])
def test_each_answer_is_read_as_what_it_says(status: int, headers: dict[str, str], body: bytes, kind: Kind,
                                             exhausted: bool) -> None:
    answer = read_answer(status, headers, body, NOW)
    assert (answer.kind, answer.exhausted) == (kind, exhausted)
    if status == 429 and "X-RateLimit-Reset" in headers:
        assert answer.reset_after_s == pytest.approx(0.4)


def test_messages_name_the_servers_reason_or_what_came_instead() -> None:
    assert read_answer(400, {}, b'{"error":{"message":"bad id"}}', NOW).reason == "400 'bad id'"
    assert "an HTML error page" in read_answer(429, {"Content-Type": "text/html"}, CDN_PAGE, NOW).reason
    assert "not JSON" in read_answer(502, {}, b"oops", NOW).reason


@given(st.floats(min_value=0, max_value=10**6, allow_nan=False))
def test_retry_after_in_seconds_or_as_a_date_is_honoured_up_to_its_cap(seconds: float) -> None:
    assert retry_after_seconds(str(seconds), NOW) == pytest.approx(min(seconds, MAX_WAIT_S))
    date = email.utils.formatdate(NOW + round(seconds), usegmt=True)
    assert retry_after_seconds(date, NOW) == pytest.approx(min(round(seconds), MAX_WAIT_S))


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "-inf"])
def test_an_unreadable_retry_after_is_no_wait_at_all(value: str | None) -> None:
    assert retry_after_seconds(value, NOW) is None


def test_each_kind_of_answer_has_its_own_budget_and_wait() -> None:
    policy, rng = RecordRetries(), random.Random(1)
    not_found = read_answer(404, {}, NOT_FOUND, NOW)
    waits = [policy.delay(not_found, n, rng) for n in range(7)]
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, None]  # the record's lag, then it is missing
    failed = read_answer(503, {"Retry-After": "3"}, b"{}", NOW)
    assert all((policy.delay(failed, n, rng) or 0) >= 3 for n in range(8)) and policy.delay(failed, 8, rng) is None
    assert policy.delay(read_answer(429, {"Retry-After": "1"}, b"{}", NOW), 150, rng) == 1.0  # lone: its own wait
    assert policy.delay(read_answer(429, {"X-RateLimit-Remaining": "0"}, b"{}", NOW), 5, rng) == 0.0  # the pause
    assert policy.delay(read_answer(400, {}, b"{}", NOW), 0, rng) is None  # retrying cannot help
