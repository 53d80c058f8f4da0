"""The resources. A field left unset is read from its environment variable when a run starts
(`usage_pipeline.settings`: one place, a one-line error naming the variable); tests set fields directly.
Secrets are never fields shown in the UI unless a caller sets them."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource
from pydantic import Field

from usage_pipeline.duck.publish import publisher_lock, store_path_for
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import OpenRouterClient
from usage_pipeline.organisations import (
    DEFAULT_KEY_VARIABLE,
    Organisation,
    Organisations,
    journal_path_for,
    load_organisations,
)
from usage_pipeline.settings import checked, setting


def _value(field_value: Any, variable: str) -> Any:
    return setting(variable) if field_value is None else checked(variable, field_value)


class OrganisationsResource(ConfigurableResource):
    """The organisations of USAGE_ORGANISATIONS (or `default`, from OPENROUTER_API_KEY), read when a run starts."""

    path: str | None = Field(default=None, description="organisations (YAML); unset: USAGE_ORGANISATIONS, or default")

    def organisations(self) -> Organisations:
        return load_organisations(None if self.path is None else {"USAGE_ORGANISATIONS": self.path})


class OpenRouterResource(ConfigurableResource):
    """OpenRouter's management API: the live service, or the project's emulator at another base URL. Each
    organisation's requests carry that organisation's key and no other."""

    api_key: str | None = Field(default=None, description="the key OPENROUTER_API_KEY would hold (the default "
                                                          "organisation's); unset: OPENROUTER_API_KEY")
    base_url: str | None = Field(default=None, description="unset: OPENROUTER_BASE_URL")
    max_concurrency: int | None = Field(default=None, description="record fetches in flight at most; "
                                           "unset: OPENROUTER_MAX_CONCURRENCY (512)")
    max_rps: float | None = Field(default=None, description="record requests per second at most; "
                                     "unset: OPENROUTER_MAX_RPS (no cap)")
    record_timeout_s: float | None = Field(default=None, description="one GET /generation's timeout; "
                                              "unset: OPENROUTER_RECORD_TIMEOUT_S (10)")
    give_up_after_s: float | None = Field(default=None, description="fail when every request has failed "
                                             "this long; unset: OPENROUTER_GIVE_UP_AFTER_S (20)")

    def settings(self, org: Organisation) -> OpenRouterSettings:
        """The organisation's settings: its own key (from its key_variable) and base URL, the shared limits."""
        if org.key_variable == DEFAULT_KEY_VARIABLE and self.api_key is not None:
            api_key = checked(DEFAULT_KEY_VARIABLE, self.api_key)
        else:
            api_key = org.api_key()
        return OpenRouterSettings(
            api_key=api_key,
            base_url=org.base_url or _value(self.base_url, "OPENROUTER_BASE_URL"),
            max_concurrency=_value(self.max_concurrency, "OPENROUTER_MAX_CONCURRENCY"),
            max_rps=_value(self.max_rps, "OPENROUTER_MAX_RPS"),
            record_timeout_s=_value(self.record_timeout_s, "OPENROUTER_RECORD_TIMEOUT_S"),
            give_up_after_s=_value(self.give_up_after_s, "OPENROUTER_GIVE_UP_AFTER_S"))

    def client(self, org: Organisation) -> OpenRouterClient:
        return OpenRouterClient(self.settings(org))


class InfluxDBResource(ConfigurableResource):
    """InfluxDB through its v1 API (1.x natively; 2.x/3.x with a token, database = bucket or database)."""

    url: str | None = Field(default=None, description="unset: INFLUXDB_URL")
    database: str | None = Field(default=None, description="unset: INFLUXDB_DATABASE (openrouter)")
    token: str | None = Field(default=None, description="2.x/3.x; unset: INFLUXDB_TOKEN")
    username: str | None = Field(default=None, description="1.x auth; unset: INFLUXDB_USERNAME")
    password: str | None = Field(default=None, description="1.x auth; unset: INFLUXDB_PASSWORD")
    retention_days: int | None = Field(default=None, description="unset: INFLUXDB_RETENTION_DAYS")
    timeout_s: float | None = Field(default=None, description="unset: INFLUXDB_TIMEOUT_S (30)")

    def settings(self, organisations: Organisations, org: str) -> InfluxSettings:
        """Organisation `org`'s settings, for its own database (two organisations sharing one are refused)."""
        organisations.get(org)  # a name the file does not list: its one-line error
        return InfluxSettings.from_url(
            url=_value(self.url, "INFLUXDB_URL"), database=dict(self.databases(organisations))[org],
            token=_value(self.token, "INFLUXDB_TOKEN"), username=_value(self.username, "INFLUXDB_USERNAME"),
            password=_value(self.password, "INFLUXDB_PASSWORD"),
            retention_days=_value(self.retention_days, "INFLUXDB_RETENTION_DAYS"),
            timeout_s=_value(self.timeout_s, "INFLUXDB_TIMEOUT_S"))

    def store(self, organisations: Organisations, org: str) -> InfluxStore:
        return InfluxStore(self.settings(organisations, org))

    def databases(self, organisations: Organisations) -> dict[str, str]:
        """Organisation -> its database: all of them are what the server must hold (InfluxDB 3 Core holds 5)."""
        return organisations.databases(_value(self.database, "INFLUXDB_DATABASE"))


class DailyUsageDatabase(ConfigurableResource):
    """The analysts' DuckDB file (`path`) and the pipeline's private store beside it.

    The pipeline writes only to its private store (through dagster-duckdb's resource) and publishes
    snapshots to `path` by atomic rename, so an analyst holding `path` open never blocks a run.
    """

    path: str | None = Field(default=None, description="unset: USAGE_DUCKDB_PATH (data/usage.duckdb)")
    history_days: int | None = Field(default=None, description="completed days the usage_history asset keeps "
                                        "from OpenRouter's aggregates, 0-365; unset: USAGE_HISTORY_DAYS (365)")

    @property
    def published(self) -> Path:
        return Path(_value(self.path, "USAGE_DUCKDB_PATH"))

    def history_span_days(self) -> int:
        """How many completed UTC days back the history reaches, checked like USAGE_HISTORY_DAYS itself."""
        if self.history_days is None:
            return int(setting("USAGE_HISTORY_DAYS"))
        return int(setting("USAGE_HISTORY_DAYS", {"USAGE_HISTORY_DAYS": str(self.history_days)}))

    @contextmanager
    def store_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        store = store_path_for(self.published)
        store.parent.mkdir(parents=True, exist_ok=True)
        # The flock queues a second pipeline process here instead of it failing on DuckDB's file lock.
        with publisher_lock(self.published), DuckDBResource(database=str(store)).get_connection() as conn:
            yield conn


class BroadcastJournalResource(ConfigurableResource):
    """The push receiver's journal (SQLite), read by the nightly capture for its push coverage."""

    path: str | None = Field(default=None, description="unset: BROADCAST_JOURNAL_PATH (data/broadcast.sqlite3)")

    def journal_path(self, org: Organisation) -> Path:
        """The organisation's journal: BROADCAST_JOURNAL_PATH for `default` (no file), else beside it,
        `broadcast.<org>.sqlite3`; each organisation's Broadcast destination has a receiver of its own."""
        return journal_path_for(Path(_value(self.path, "BROADCAST_JOURNAL_PATH")), org)


def resources_from_env() -> dict[str, ConfigurableResource]:
    """The resources as deployed: every field unset, so each is read from its variable when a run starts."""
    return {"openrouter": OpenRouterResource(), "influxdb": InfluxDBResource(), "usage_db": DailyUsageDatabase(),
            "broadcast": BroadcastJournalResource(), "organisations": OrganisationsResource()}
