"""The failed-check alert on a real Dagster instance: a real day captured in process (emulator, influxd), one
point deleted, the checks run again and the blocking full-capture check fails; the sensor, evaluated as the
daemon evaluates it, posts exactly one alert naming the organisation, the day and the counts, to a real
loopback webhook, and nothing on its next tick. (The other events, through the daemon: test_dagster_dev.)"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import SensorResult, build_sensor_context

from openrouter_emulator.process import EmulatorProcess
from usage_pipeline.alerts import HEADLINES
from usage_pipeline.defs.alerts import alert_on_failed_checks
from usage_pipeline.influx.local_server import LocalInfluxd
from usage_pipeline_tests.alert_receiver import alert_receiver
from usage_pipeline_tests.conftest import yesterday
from usage_pipeline_tests.dagster_dev import REPO
from usage_pipeline_tests.test_pipeline import Ledger


def test_a_failed_blocking_check_is_alerted_once_with_its_organisation_day_and_counts(
        emulator: EmulatorProcess, influxd: LocalInfluxd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(emulator, influxd, tmp_path)
    repository = ledger.defs.get_repository_def()
    day = yesterday() - dt.timedelta(days=1)

    def tick(cursor: str | None) -> SensorResult:
        result = alert_on_failed_checks(build_sensor_context(instance=ledger.instance, cursor=cursor,
                                                             repository_def=repository))
        assert isinstance(result, SensorResult), result
        return result

    with alert_receiver() as receiver:
        monkeypatch.setenv("USAGE_ALERT_WEBHOOK_URL", receiver.url)
        watching = tick(None)  # the first tick starts watching
        assert ledger.run(day).success  # a green day: no alert
        green = tick(watching.cursor)
        assert receiver.posted() == []
        row = next(iter(ledger.store.iter_day_frames(day, chunk_size=1))).iloc[0]
        ledger.store.delete_point(row["model"], row["provider"], int(row["time"]))
        count = ledger.truth(day)["count"]
        assert not ledger.verify_only(day).success  # full_capture_matches_openrouter fails, blocking
        red = tick(green.cursor)
        assert red.skip_reason is not None and red.skip_reason.skip_message == "1 alert(s) sent"
        (alert,) = receiver.posted()
        assert (alert.headline, alert.org, alert.day) == (HEADLINES["check_failed"], "default", day.isoformat())
        assert alert.figure.startswith(f"full_capture_matches_openrouter: default {day}: stored {count - 1} "
                                       f"generations, OpenRouter counts {count}"), alert.figure
        tick(red.cursor)
        assert len(receiver.posted()) == 1  # once
    assert ledger.run(day).success  # the day healed for the other tests


def test_the_alert_sensors_run_by_default_only_when_the_webhook_is_set_at_load() -> None:
    """Decided when the code location loads (a process each: the definitions are built once per process)."""
    show = ("from usage_pipeline.defs.alerts import ALERT_SENSORS as s; "
            "print(sorted({x.default_status.value for x in s}))")
    env = {k: v for k, v in os.environ.items() if k != "USAGE_ALERT_WEBHOOK_URL"}
    for url, status in (("", "STOPPED"), ("https://hooks.slack.com/services/T0/B0/MARKED", "RUNNING")):
        done = subprocess.run([sys.executable, "-c", show], env={**env, "USAGE_ALERT_WEBHOOK_URL": url},
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0 and done.stdout.strip() == f"['{status}']", done.stderr[-2000:]
        assert "MARKED" not in done.stdout + done.stderr
