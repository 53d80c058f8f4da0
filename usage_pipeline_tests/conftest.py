"""Real servers for the tests: one private influxd for the session, emulators started per need."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.influx.local_server import LocalInfluxd, run_influxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import DayRecording, capture_day
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import OpenRouterClient


def yesterday() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfluxd]:
    root = tmp_path_factory.mktemp("influxd")
    with run_influxd(root / "data", log_path=root / "influxd.log") as server:
        yield server


@pytest.fixture()
def store(influxd: LocalInfluxd) -> Iterator[InfluxStore]:
    """A fresh database per test, so counts are never polluted by another test; dropped afterwards."""
    s = InfluxStore(InfluxSettings(url=influxd.url, database=f"test_{uuid.uuid4().hex[:10]}"))
    s.ensure_database()
    yield s
    s.query(f'DROP DATABASE "{s.settings.database}"')
    s.close()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A shared emulator with the default 2,000 generations a day; tests must not leave faults on.

    Its per-key analytics limit (64/min) is off: dozens of test clients share its one key, which no real
    deployment does, and each client paces itself to 64/min anyway. The emulator's own tests cover the limit.
    """
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with run_emulator(seed=7, generations_per_day=2000, days=3, log_path=log,
                      extra_args=["--analytics-rpm", "0"]) as server:
        yield server


def settings_for(server: EmulatorProcess, *, key: str | None = None, **kwargs: Any) -> OpenRouterSettings:
    """OpenRouter settings for `server`; `kwargs` are OpenRouterSettings' own (max_concurrency, ...)."""
    return OpenRouterSettings(api_key=key or server.management_key, base_url=server.base_url, **kwargs)


def client_for(server: EmulatorProcess, *, key: str | None = None, **kwargs: int) -> OpenRouterClient:
    """The plain client for `server`; `kwargs` are OpenRouterClient's own (analytics_rpm)."""
    return OpenRouterClient(settings_for(server, key=key), **kwargs)


def capture(server: EmulatorProcess, store: InfluxStore, day: dt.date | None = None, *, key: str | None = None,
            settings: Mapping[str, Any] | None = None, **kwargs: Any) -> DayRecording:
    """`capture_day` of `server`'s day into `store`'s database; `kwargs` are capture_day's own (refresh,
    retries, analytics_rpm), `settings` OpenRouterSettings' fields."""
    openrouter = settings_for(server, key=key, **(settings or {}))
    return asyncio.run(capture_day(openrouter, store.settings, day or yesterday(), **kwargs))
