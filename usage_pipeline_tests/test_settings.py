"""Every setting through a bad value: a one-line error naming the variable and the form, no secret echoed."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance, Failure

from usage_pipeline.definitions import build_defs
from usage_pipeline.defs.organisations import add_organisations
from usage_pipeline.defs.partitions import OrgDay, capturable, org_day, partition_day
from usage_pipeline.defs.resources import DailyUsageDatabase, InfluxDBResource, OpenRouterResource
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.organisations import implicit_organisations
from usage_pipeline.settings import VARIABLES, SettingError, setting

DEFAULT_ORG = implicit_organisations().members[0]

BAD: dict[str, str] = {
    "OPENROUTER_API_KEY": "sk-or-v1-MARKED secret",
    "OPENROUTER_BASE_URL": "openrouter.ai/api/v1",
    "OPENROUTER_MAX_CONCURRENCY": "abc",
    "OPENROUTER_MAX_RPS": "-5",
    "OPENROUTER_RECORD_TIMEOUT_S": "ten",
    "OPENROUTER_GIVE_UP_AFTER_S": "0",
    "INFLUXDB_URL": "localhost:8086",
    "INFLUXDB_DATABASE": "open\nrouter",
    "INFLUXDB_TOKEN": "tok-MARKED\tsecret",
    "INFLUXDB_USERNAME": "a\x00b",
    "INFLUXDB_PASSWORD": "pw-MARKED secret",
    "INFLUXDB_RETENTION_DAYS": "abc",
    "INFLUXDB_TIMEOUT_S": "inf",
    "USAGE_START_DATE": "2026-13-45",
    "USAGE_ORGANISATIONS": "orgs\x00.yaml",
    "USAGE_CELERY_BROKER_URL": "http://u:MARKED@127.0.0.1:6379",
    "USAGE_DUCKDB_PATH": "\x07",
    "USAGE_RECAPTURE_AFTER_HOURS": "soon",
    "USAGE_RECAPTURE_MAX_ATTEMPTS": "1.5",
    "USAGE_HISTORY_DAYS": "366",
    "BROADCAST_TOKEN": "bt-MARKED secret",
    "BROADCAST_JOURNAL_PATH": "data/\x01journal",
    "BROADCAST_MAX_BODY_BYTES": "100",
    "BROADCAST_DRAIN_LAG_S": "-1",
    "BROADCAST_JOURNAL_RETENTION_DAYS": "-1",
    "USAGE_LOCK_DATABASE_URL": "mysql://locks:pw-MARKED@db.example.com/locks",
    "USAGE_ALERT_WEBHOOK_URL": "hooks.slack.com/services/T0/B0/MARKED",  # no scheme; its path is the secret
    "USAGE_CAPTURE_DEADLINE_UTC": "6am",
}


def test_every_variable_is_listed_here() -> None:
    assert set(BAD) == set(VARIABLES)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_gives_a_one_line_error_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingError) as refused:
        setting(name, {name: BAD[name]})
    message = str(refused.value)
    assert "\n" not in message and message.startswith(name) and " must be " in message
    if VARIABLES[name].secret:
        assert "MARKED" not in message
    else:
        assert repr(BAD[name].strip())[:30] in message  # the value is shown, so the user sees the mistake


def test_defaults_blanks_and_surrounding_whitespace() -> None:
    assert setting("OPENROUTER_MAX_CONCURRENCY", {}) == 512
    assert setting("OPENROUTER_MAX_CONCURRENCY", {"OPENROUTER_MAX_CONCURRENCY": "  "}) == 512
    assert setting("OPENROUTER_API_KEY", {"OPENROUTER_API_KEY": "sk-or-v1-abc\n"}) == "sk-or-v1-abc"  # $(cat file)
    assert setting("USAGE_START_DATE", {"USAGE_START_DATE": "2026-01-02"}) == dt.date(2026, 1, 2)
    with pytest.raises(SettingError, match="^OPENROUTER_API_KEY is not set"):
        setting("OPENROUTER_API_KEY", {})


def test_resources_read_their_variables_when_asked_not_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    resource = OpenRouterResource()  # nothing is read yet
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-abc\n")
    monkeypatch.setenv("OPENROUTER_MAX_CONCURRENCY", "64")
    settings = resource.settings(DEFAULT_ORG)
    assert settings.api_key == "sk-or-v1-abc" and settings.max_concurrency == 64
    monkeypatch.setenv("OPENROUTER_MAX_CONCURRENCY", "abc")
    with pytest.raises(SettingError, match="^OPENROUTER_MAX_CONCURRENCY must be a positive integer, got 'abc'$"):
        resource.settings(DEFAULT_ORG)
    with pytest.raises(SettingError, match="^OPENROUTER_API_KEY must be"):
        OpenRouterResource(api_key="two\nlines").settings(DEFAULT_ORG)


def test_credentials_in_the_influxdb_url_never_stay_in_it() -> None:
    settings = InfluxSettings.from_url("http://ledger:pw%2DMARKED@127.0.0.1:8086/")
    assert settings.url == "http://127.0.0.1:8086"
    assert settings.username == "ledger" and settings.password == "pw-MARKED"
    assert "MARKED" not in repr(settings)
    implicit = implicit_organisations()
    assert InfluxDBResource(url="http://u:pw-MARKED@h:1").settings(implicit, "default").url == "http://h:1"


def test_a_run_with_a_bad_setting_fails_with_that_line_before_any_query(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-abc")
    monkeypatch.setenv("INFLUXDB_URL", "http://127.0.0.1:9")  # nothing listens: a query would fail otherwise
    monkeypatch.setenv("INFLUXDB_RETENTION_DAYS", "abc")
    defs = build_defs({"openrouter": OpenRouterResource(), "influxdb": InfluxDBResource(),
                       "usage_db": DailyUsageDatabase(path=str(tmp_path / "u.duckdb"))})
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    instance = DagsterInstance.ephemeral()
    add_organisations(instance, ["default"])
    result = defs.resolve_job_def("daily_ledger").execute_in_process(
        partition_key=OrgDay("default", day).key, instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error
    assert error.message.strip().endswith(
        "INFLUXDB_RETENTION_DAYS must be a whole number of days, 0 for forever, got 'abc'")


def test_a_partition_key_that_is_not_a_day_is_one_line() -> None:
    for key in ("yesterday", "2026-02-30", ""):
        with pytest.raises(Failure) as refused:
            partition_day(key)
        assert refused.value.description == f"partition key {key!r} is not a day: it must be YYYY-MM-DD"
    for key in ("2026-06-12", "2026-06-12|", "acme|2026-06-12"):
        with pytest.raises(Failure):
            org_day(key)
    assert org_day("2026-06-12|acme") == OrgDay("acme", dt.date(2026, 6, 12))
    with pytest.raises(Failure, match="^acme: .*not complete yet"):
        capturable(OrgDay("acme", dt.datetime.now(dt.UTC).date()).key)
