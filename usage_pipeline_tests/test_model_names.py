"""The model identity alone (no I/O): slugs, permaslugs and labels resolve to the key the checks compare on."""

from __future__ import annotations

import datetime as dt

import pytest

from usage_pipeline.openrouter.counts import activity_date
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.model_names import ModelCatalogue, ModelName, ModelNamesError, parse_model_names

pytestmark = pytest.mark.pure

HAIKU = ModelName("anthropic/claude-haiku-4.5", "anthropic/claude-4.5-haiku-20251001", "Anthropic: Claude Haiku 4.5")
GPT = ModelName("openai/gpt-4.1", "openai/gpt-4.1-2025-04-14", "OpenAI: GPT-4.1")


def test_model_names_are_kept_as_received_or_refused() -> None:
    (name,) = parse_model_names([{"id": "openai/gpt-4.1", "canonical_slug": None, "name": "OpenAI: GPT-4.1"}])
    assert (name.slug, name.permaslug, name.name) == ("openai/gpt-4.1", None, "OpenAI: GPT-4.1")
    for entry, needle in (({"id": ""}, "entry 0: id"), ({"name": "x"}, "entry 0: id"), ("openai/gpt-4.1", "entry 0"),
                          ({"id": "a/b", "name": 3}, "'a/b': name")):
        with pytest.raises(ModelNamesError, match=needle):
            parse_model_names([entry])


def test_permaslug_and_slug_meet_on_the_permaslug_with_slug_and_label_beside() -> None:
    catalogue = ModelCatalogue([HAIKU, GPT])
    by_permaslug = catalogue.resolve("anthropic/claude-4.5-haiku-20251001")  # as /generation names it
    by_slug = catalogue.resolve("anthropic/claude-haiku-4.5")  # as /activity's `model` names it
    assert by_permaslug == by_slug
    assert by_permaslug.key == "anthropic/claude-4.5-haiku-20251001"
    assert (by_permaslug.slug, by_permaslug.label) == ("anthropic/claude-haiku-4.5", "Anthropic: Claude Haiku 4.5")
    assert by_permaslug.shown() == "anthropic/claude-haiku-4.5 (anthropic/claude-4.5-haiku-20251001)"


def test_activity_alone_bridges_a_model_get_models_no_longer_lists() -> None:
    catalogue = ModelCatalogue([], activity=[("anthropic/claude-opus-4", "anthropic/claude-opus-4-20260117")])
    assert catalogue.resolve("anthropic/claude-opus-4-20260117").slug == "anthropic/claude-opus-4"
    assert catalogue.resolve("anthropic/claude-opus-4").key == "anthropic/claude-opus-4-20260117"
    assert catalogue.activity_key("anthropic/claude-opus-4", None).key == "anthropic/claude-opus-4-20260117"


def test_an_unknown_name_is_its_own_exact_key_never_dropped() -> None:
    identity = ModelCatalogue([GPT]).resolve("acme/secret-model-2027")
    assert (identity.key, identity.slug, identity.label, identity.known) == ("acme/secret-model-2027", None, None,
                                                                           False)
    assert identity.shown() == "acme/secret-model-2027"
    assert ModelCatalogue([GPT]).resolve("OpenAI/GPT-4.1").key == "OpenAI/GPT-4.1"  # exact: no case folding


def test_a_slug_the_day_splits_over_two_permaslugs_keys_both_sides_when_the_ledger_holds_the_slug() -> None:
    day = [("openai/gpt-4o", "openai/gpt-4o-2024-08-06"), ("openai/gpt-4o", "openai/gpt-4o-2024-11-20")]
    catalogue = ModelCatalogue([], activity=day)
    assert catalogue.resolve("openai/gpt-4o").key == "openai/gpt-4o"  # cannot be pinned to one version
    assert catalogue.activity_key(*day[0]).key == "openai/gpt-4o-2024-08-06"  # until the ledger holds the slug
    catalogue.hold(["openai/gpt-4o"])
    assert {catalogue.activity_key(*row).key for row in day} == {"openai/gpt-4o"}
    assert catalogue.resolve("openai/gpt-4o-2024-11-20").key == "openai/gpt-4o"


def test_permaslugs_stored_as_such_keep_their_own_key_when_the_day_splits_a_slug() -> None:
    day = [("openai/gpt-4o", "openai/gpt-4o-2024-08-06"), ("openai/gpt-4o", "openai/gpt-4o-2024-11-20")]
    catalogue = ModelCatalogue([], activity=day)
    catalogue.hold(["openai/gpt-4o-2024-08-06", "openai/gpt-4o-2024-11-20"])
    assert [catalogue.activity_key(*row).key for row in day] == [p for _, p in day]


@pytest.mark.parametrize("value", ["2026-06-12 00:00:00", "2026-06-12", "2026-06-12T00:00:00Z",
                                   "2026-06-12T00:00:00.000+00:00"])
def test_an_activity_date_is_read_in_every_form_it_takes(value: str) -> None:
    assert activity_date({"date": value}) == dt.date(2026, 6, 12)


@pytest.mark.parametrize(("value", "needle"), [("2026-06-12 13:00:00", "not a UTC midnight"),
                                               ("June 12", "is not a date"), (20260612, "must be a string"),
                                               (None, "must be a string")])
def test_an_activity_date_of_another_shape_is_refused_by_name(value: object, needle: str) -> None:
    with pytest.raises(OpenRouterError, match=needle):
        activity_date({"date": value})
