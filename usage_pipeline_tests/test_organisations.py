"""Organisations as configuration: the YAML file, its one-line errors, the implicit `default`, and what each
organisation's runs are given (its own key, database and journal; never another's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usage_pipeline.defs.resources import BroadcastJournalResource, InfluxDBResource, OpenRouterResource
from usage_pipeline.organisations import load_organisations, parse_organisations
from usage_pipeline.settings import SettingError

TWO = """
organisations:
  - name: acme
    key_variable: ACME_OPENROUTER_KEY
  - name: globex
    key_variable: GLOBEX_OPENROUTER_KEY
    influxdb_database: globex_ledger
    base_url: http://127.0.0.1:9/api/v1/
"""


def test_no_file_is_one_organisation_with_the_old_key_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USAGE_ORGANISATIONS", raising=False)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-old")
    monkeypatch.setenv("INFLUXDB_DATABASE", "openrouter")
    organisations = load_organisations()
    (org,) = organisations.members
    assert org.name == "default" and org.implicit
    assert OpenRouterResource().settings(org).api_key == "sk-or-v1-old"
    assert InfluxDBResource(url="http://h:1").settings(organisations, org.name).database == "openrouter"  # as before
    assert BroadcastJournalResource(path="data/broadcast.sqlite3").journal_path(org) == Path("data/broadcast.sqlite3")


def test_each_organisation_gets_its_own_key_database_and_journal(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "orgs.yaml"
    path.write_text(TWO)
    monkeypatch.setenv("USAGE_ORGANISATIONS", str(path))
    monkeypatch.setenv("ACME_OPENROUTER_KEY", "sk-or-v1-acme")
    monkeypatch.setenv("GLOBEX_OPENROUTER_KEY", "sk-or-v1-globex\n")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-NOT-FOR-ANY-ORGANISATION")
    monkeypatch.setenv("OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1")
    organisations = load_organisations()
    acme, globex = organisations.members
    openrouter = OpenRouterResource(api_key="sk-or-v1-field-is-OPENROUTER_API_KEY")
    assert openrouter.settings(acme).api_key == "sk-or-v1-acme"  # never the default key, never the other's
    assert openrouter.settings(globex).api_key == "sk-or-v1-globex"
    assert openrouter.settings(acme).base_url == "https://openrouter.ai/api/v1"
    assert openrouter.settings(globex).base_url == "http://127.0.0.1:9/api/v1"
    influx = InfluxDBResource(url="http://h:1", database="openrouter")
    assert [influx.settings(organisations, org.name).database for org in (acme, globex)] == ["openrouter_acme",
                                                                                       "globex_ledger"]
    journals = BroadcastJournalResource(path="data/broadcast.sqlite3")
    assert journals.journal_path(acme) == Path("data/broadcast.acme.sqlite3")
    assert organisations.pick("globex") is globex
    with pytest.raises(SettingError, match=r"lists 2 organisations \(acme, globex\): name one with --org$"):
        organisations.pick(None)
    with pytest.raises(SettingError, match=r"^organisation 'initech' is not configured \(USAGE_ORGANISATIONS file "):
        organisations.get("initech")
    monkeypatch.delenv("GLOBEX_OPENROUTER_KEY")
    with pytest.raises(SettingError, match="^GLOBEX_OPENROUTER_KEY is not set: it must be an OpenRouter management"):
        openrouter.settings(globex)
    monkeypatch.setenv("GLOBEX_OPENROUTER_KEY", "sk-or-v1-MARKED secret")
    with pytest.raises(SettingError) as refused:
        openrouter.settings(globex)
    assert "MARKED" not in str(refused.value) and "GLOBEX_OPENROUTER_KEY" in str(refused.value)


BAD_FILES: dict[str, tuple[str, str]] = {
    "not yaml": ("organisations: [\n", "is not YAML at line 2"),
    "a list": ("- name: acme\n", "must be a mapping with one key, organisations"),
    "another key": ("organisations: []\nextra: 1\n", "must be a mapping with one key, organisations"),
    "empty": ("organisations: []\n", "organisations must be a non-empty list"),
    "no key variable": ("organisations: [{name: acme}]\n", "organisations[0] lacks key_variable"),
    "unknown field": ("organisations: [{name: acme, key_variable: K, api_key: sk-or-v1-x}]\n",
                      "has unknown field 'api_key'"),
    "bad name": ("organisations: [{name: Acme Inc, key_variable: K}]\n", "name must be lower-case letters"),
    "a key, not a variable": ("organisations: [{name: acme, key_variable: sk-or-v1-abc}]\n",
                              "key_variable must be an environment variable name"),
    "same name": ("organisations: [{name: acme, key_variable: A}, {name: acme, key_variable: B}]\n",
                  "name 'acme' is given to more than one organisation"),
    "same key": ("organisations: [{name: acme, key_variable: A}, {name: globex, key_variable: A}]\n",
                 "key_variable 'A' is given to more than one organisation"),
    "bad url": ("organisations: [{name: acme, key_variable: A, base_url: openrouter.ai}]\n",
                "(acme): base_url must be an http(s) URL"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_what_is_wrong(case: str) -> None:
    text, said = BAD_FILES[case]
    with pytest.raises(SettingError) as refused:
        parse_organisations(text, source="orgs.yaml")
    message = str(refused.value)
    assert message.startswith("orgs.yaml") and said in message and "\n" not in message
    assert "sk-or-v1" not in message  # a key pasted where its variable's name belongs is never echoed


def test_a_missing_file_and_shared_databases_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("USAGE_ORGANISATIONS", str(tmp_path / "absent.yaml"))
    with pytest.raises(SettingError, match=r"^USAGE_ORGANISATIONS='.*absent.yaml' cannot be read: No such file"):
        load_organisations()
    organisations = parse_organisations(
        "organisations: [{name: acme, key_variable: A}, {name: b, key_variable: B, influxdb_database: base_acme}]")
    with pytest.raises(SettingError, match="'acme' and 'b' would share InfluxDB database 'base_acme'"):
        organisations.databases("base")
