"""The three resources, configured from the environment with `EnvVar` (secrets never appear in the UI)."""

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import duckdb
from dagster import ConfigurableResource, EnvVar
from dagster_duckdb import DuckDBResource

from usage_pipeline.duck.publish import publisher_lock, store_path_for
from usage_pipeline.influx.store import InfluxSettings, InfluxStore
from usage_pipeline.openrouter.client import OpenRouterClient
from usage_pipeline.openrouter.settings import DEFAULT_BASE_URL, OpenRouterSettings

DEFAULT_DUCKDB_PATH = "data/usage.duckdb"


class OpenRouterResource(ConfigurableResource):
    """OpenRouter's management API: the live service, or the project's emulator at another base URL."""

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = 512
    max_rps: Optional[float] = None
    record_timeout_s: float = 10.0

    def client(self) -> OpenRouterClient:
        return OpenRouterClient(OpenRouterSettings(
            api_key=self.api_key, base_url=self.base_url.rstrip("/"), max_concurrency=self.max_concurrency,
            max_rps=self.max_rps, record_timeout_s=self.record_timeout_s))


class InfluxDBResource(ConfigurableResource):
    """InfluxDB through its 1.x-compatible API (1.x natively; 2.x/3.x with a token and database = bucket)."""

    url: str
    database: str = "openrouter"
    token: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None
    retention_days: Optional[int] = None

    def store(self) -> InfluxStore:
        return InfluxStore(InfluxSettings(url=self.url.rstrip("/"), database=self.database, token=self.token,
                                          username=self.username, password=self.password,
                                          retention_days=self.retention_days))


class DailyUsageDatabase(ConfigurableResource):
    """The analysts' DuckDB file (`path`) and the pipeline's private store beside it.

    The pipeline writes only to its private store (through dagster-duckdb's resource) and publishes
    snapshots to `path` by atomic rename, so an analyst holding `path` open never blocks a run.
    """

    path: str = DEFAULT_DUCKDB_PATH

    @property
    def published(self) -> Path:
        return Path(self.path)

    @contextmanager
    def store_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        store = store_path_for(self.published)
        store.parent.mkdir(parents=True, exist_ok=True)
        # The flock queues a second pipeline process here instead of it failing on DuckDB's file lock.
        with publisher_lock(self.published), DuckDBResource(database=str(store)).get_connection() as conn:
            yield conn


def _secret(name: str) -> Optional[EnvVar]:
    return EnvVar(name) if os.environ.get(name) else None


def _number(name: str, kind: type[int] | type[float], default: Optional[float]) -> Optional[float]:
    """A positive number from the environment, or a one-line error naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        form = "a positive integer" if kind is int else "a positive number"
        raise ValueError(f"{name} must be {form}, got {text!r}")
    return value


def resources_from_env() -> dict[str, ConfigurableResource]:
    retention = os.environ.get("INFLUXDB_RETENTION_DAYS")
    return {
        "openrouter": OpenRouterResource(
            api_key=EnvVar("OPENROUTER_API_KEY"),
            base_url=os.environ.get("OPENROUTER_BASE_URL", DEFAULT_BASE_URL),
            max_concurrency=int(_number("OPENROUTER_MAX_CONCURRENCY", int, 512) or 512),
            max_rps=_number("OPENROUTER_MAX_RPS", float, None),
            record_timeout_s=float(_number("OPENROUTER_RECORD_TIMEOUT_S", float, 10.0) or 10.0),
        ),
        "influxdb": InfluxDBResource(
            url=EnvVar("INFLUXDB_URL"),
            database=os.environ.get("INFLUXDB_DATABASE", "openrouter"),
            token=_secret("INFLUXDB_TOKEN"),
            username=os.environ.get("INFLUXDB_USERNAME"),
            password=_secret("INFLUXDB_PASSWORD"),
            retention_days=int(retention) if retention else None,
        ),
        "usage_db": DailyUsageDatabase(path=os.environ.get("USAGE_DUCKDB_PATH", DEFAULT_DUCKDB_PATH)),
    }
