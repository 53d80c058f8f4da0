"""A dead or broken OpenRouter fails the day in bounded time, saying what was tried, instead of paying
every record's whole backoff (the circuit breaker). Bounds are shortened here; their defaults are
measured by `benchmarks/failure_bounds.py`."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import record_day
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline_tests.conftest import yesterday

GIVE_UP_S = 2.0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: nothing listens


def test_an_unreachable_openrouter_fails_saying_what_was_tried(store: InfluxStore) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/v1"
    with pytest.raises(OpenRouterError) as failed:
        record_day(OpenRouterSettings(api_key="sk-or-v1-x", base_url=url, give_up_after_s=GIVE_UP_S),
                   store.settings, yesterday())
    message = str(failed.value)
    assert "POST /analytics/query: no answer from OpenRouter at " + url in message
    assert "tried for" in message and "ClientConnectorError" in message
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


@pytest.fixture
def failing(tmp_path: Path):  # noqa: ANN201
    with run_emulator(seed=41, generations_per_day=300, days=1, log_path=tmp_path / "emu.log") as server:
        yield server


def test_a_persistently_failing_record_endpoint_trips_the_breaker(failing: EmulatorProcess,
                                                                  store: InfluxStore) -> None:
    failing.set_faults([{"path": "/generation", "status": 503, "count": 1_000_000, "retry_after": 1}])
    settings = OpenRouterSettings(api_key=failing.management_key, base_url=failing.base_url,
                                  give_up_after_s=GIVE_UP_S)
    with pytest.raises(OpenRouterError, match="no request has succeeded for") as failed:
        record_day(settings, store.settings, yesterday())
    assert "OPENROUTER_GIVE_UP_AFTER_S=2" in str(failed.value) and "503" in str(failed.value)
    answered = failing.stats()["by_path_status"]["/generation"]["503"]
    assert answered < 300 * 3  # most records never paid their own 8 retries


def test_a_persistently_failing_analytics_endpoint_gives_up(failing: EmulatorProcess, store: InfluxStore,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    failing.set_faults([{"path": "/analytics/query", "status": 503, "count": 1_000_000}])
    settings = OpenRouterSettings(api_key=failing.management_key, base_url=failing.base_url,
                                  give_up_after_s=GIVE_UP_S)
    with caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"), \
            pytest.raises(OpenRouterError, match="POST /analytics/query: still 503"):
        record_day(settings, store.settings, yesterday())
    answered = failing.stats()["by_path_status"]["/analytics/query"]["503"]
    assert answered <= 6
    retries = [r.getMessage() for r in caplog.records if r.name == "usage_pipeline.retries"]
    assert len(retries) == answered - 1  # every retry logged, the give-up is not a retry
    assert all(line.startswith("OpenRouter POST /api/v1/analytics/query: HTTP 503; retry ") for line in retries)
    assert failing.management_key not in caplog.text
