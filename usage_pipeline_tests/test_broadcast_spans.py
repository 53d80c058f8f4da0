"""Reading Broadcast deliveries alone (no I/O): the real ones, both intValue forms, and every refusal."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from usage_pipeline.broadcast.spans import DeliveryError, read_delivery
from usage_pipeline_tests.push import CODEX, CONNECTION_TEST, ERROR_SPAN, HAIKU, delivery, real

pytestmark = pytest.mark.pure
KEY_NAME, MODEL = "trace.metadata.openrouter.api_key_name", "gen_ai.request.model"


def test_the_real_deliveries_announce_one_generation_each_with_its_figures() -> None:
    codex = read_delivery(real(CODEX))
    assert codex.other_spans == 2 and not codex.connection_test
    (span,) = codex.spans
    assert span.id == "gen-1790606055-lQEtY5tcJIA3qEdgtaaa" and span.start_ns == 1790606055699000000
    assert (span.total_cost, span.input_tokens, span.output_tokens) == (0.00492475, 18763, 117)
    assert span.api_key_name == "fixture key" and span.model == "openai/gpt-5.1-codex-mini" and not span.error
    (haiku,) = read_delivery(real(HAIKU)).spans
    assert (haiku.total_cost, haiku.input_tokens, haiku.output_tokens) == (0.005334, 2489, 569)


def test_an_error_span_is_announced_without_usage_and_the_connection_test_announces_nothing() -> None:
    (span,) = read_delivery(real(ERROR_SPAN)).spans
    assert span.error and span.total_cost is None and span.input_tokens is None
    test = read_delivery(real(CONNECTION_TEST))
    assert test.connection_test and not test.spans


def test_int_values_as_decimal_strings_read_the_same_as_json_numbers() -> None:
    as_numbers = read_delivery(delivery(HAIKU, "gen-1-abc"))
    as_strings = read_delivery(delivery(HAIKU, "gen-1-abc", ints_as_strings=True))
    assert as_numbers == as_strings and as_strings.spans[0].input_tokens == 2489


def _root_attribute(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] = [a for a in span["attributes"] if a["key"] != key]
    if value is not None:
        span["attributes"].append({"key": key, "value": value})
    return body


def _root(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(fields)
    return body


@pytest.mark.parametrize(("body", "said"), [
    ([], "must be a JSON object"),
    ({"spans": []}, "no resourceSpans"),
    ({"resourceSpans": {}}, "resourceSpans must be a list"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}, "string name"),
    (_root_attribute(real(CODEX), "gen_ai.response.id", None), "no gen_ai.response.id"),
    (_root_attribute(real(CODEX), "gen_ai.response.id", {"stringValue": "gen 1; DROP"}), "not a generation id"),
    (_root_attribute(real(CODEX), "gen_ai.response.id", {"intValue": 7}), "must be a stringValue"),
    (_root_attribute(real(CODEX), "gen_ai.usage.input_tokens", {"intValue": "12.5"}), "decimal string"),
    (_root_attribute(real(CODEX), "gen_ai.usage.input_tokens", {"intValue": True}), "decimal string"),
    (_root_attribute(real(CODEX), "gen_ai.usage.input_tokens", {"intValue": 2**63}), "64 bits"),
    (_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": "0.1"}), "must be a number"),
    (_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": float("nan")}), "finite"),
    (_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": 1, "intValue": 1}), "no OTLP value"),
    (_root(real(CODEX), attributes={"a": 1}), "attributes must be a list"),
    (_root(real(CODEX), startTimeUnixNano="soon"), "startTimeUnixNano"),
    (_root(real(CODEX), startTimeUnixNano=None), "no startTimeUnixNano"),
    (_root(real(CODEX), status={"code": "2"}), "status.code"),
    (_root_attribute(real(CODEX), KEY_NAME, {"stringValue": "key \ud800"}), f"'{KEY_NAME}': holds a lone surrogate"),
    (_root_attribute(real(CODEX), MODEL, {"stringValue": "\udfffopenai"}), "surrogate .*, U[+]DFFF, at character 0"),
    (_root_attribute(real(CODEX), MODEL, {"stringValue": "openai/gpt\n"}), f"'{MODEL}': holds a control character"),
    (_root_attribute(real(CODEX), KEY_NAME, {"stringValue": "a\x00b"}), "control character, U[+]0000, at character 1"),
    (_root_attribute(real(CODEX), KEY_NAME, {"stringValue": "k\x9f"}), "control character, U[+]009F"),
    (_root_attribute(real(CODEX), KEY_NAME, {"stringValue": "k" * 1025}), "1,025 characters, over the 1,024"),
    (_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": 2**53 + 1}), "not exactly a 64-bit"),
    (_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": 10**400}), "not exactly a 64-bit"),
    (_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": -0.0}), "-0.0 is not stored exactly"),
    (_root_attribute(real(CODEX), "gen_ai.usage.output_tokens", {"intValue": 10**4000}), "does not fit in 64 bits"),
])
def test_a_malformed_delivery_is_refused_naming_what_is_wrong(body: Any, said: str) -> None:
    with pytest.raises(DeliveryError, match=said):
        read_delivery(body)


def test_a_name_of_the_longest_length_with_any_scalar_value_is_kept_exactly() -> None:
    name = ("\u202e\ufeff\U0001d518\u00e9 " * 205)[:1024]  # bidi, BOM, astral, accents: all scalar values
    (span,) = read_delivery(_root_attribute(real(CODEX), KEY_NAME, {"stringValue": name})).spans
    assert span.api_key_name == name and len(name) == 1024
    (span,) = read_delivery(_root_attribute(real(CODEX), "gen_ai.usage.total_cost", {"doubleValue": 2**53})).spans
    assert span.total_cost == 2**53
