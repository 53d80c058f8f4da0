"""Start and stop the emulator as a real subprocess, so tests and demos talk real HTTP to it.

mirakuru starts it in its own session, polls `/_emulator/config` until it answers 200, and stops it with
SIGTERM, then SIGKILL after STARTUP_TIMEOUT_S. `EmulatorProcess` also drives the running emulator's
`/_emulator` control API (settings, faults, ground truth, counters) over real HTTP with the standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirakuru import HTTPExecutor
from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError, ProcessFinishedWithError, TimeoutExpired

STARTUP_TIMEOUT_S = 30.0  # mirakuru's one timeout: to answer at start, and to exit after SIGTERM at stop
CONTROL_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3  # the free port can be taken between probing and binding

logger = logging.getLogger(__name__)


class EmulatorStartError(RuntimeError):
    """The emulator died or never answered; the message carries the tail of its log."""


class EmulatorControlError(RuntimeError):
    """A `/_emulator` control call was refused; the message carries the emulator's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass
class EmulatorProcess:
    base_url: str  # e.g. "http://127.0.0.1:54321/api/v1"
    control_url: str  # e.g. "http://127.0.0.1:54321/_emulator"
    management_key: str
    inference_key: str
    log_path: Path
    _executor: HTTPExecutor | None = field(default=None, repr=False)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STARTUP_TIMEOUT_S; safe to call twice.

        An unexpected exit code is logged, not raised: stop runs in `finally` blocks, where raising
        would hide the error that got there.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            executor.stop()
        except ProcessFinishedWithError as exc:
            logger.warning("OpenRouter emulator exited with code %s (log %s)", exc.exit_code, self.log_path)

    @property
    def pid(self) -> int | None:
        process = None if self._executor is None else self._executor.process
        return None if process is None else process.pid

    @property
    def running(self) -> bool:
        return self._executor is not None and self._executor.running()

    # -- the control API (`/_emulator/...`) --

    def control(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                timeout_s: float = CONTROL_TIMEOUT_S) -> Any:
        """One control call; the parsed JSON answer, or EmulatorControlError with the emulator's reason."""
        url = f"{self.control_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text[:500]
            raise EmulatorControlError(error.code, message) from None

    def config(self) -> dict[str, Any]:
        """Every runtime setting and its current value."""
        return self.control("GET", "/config")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change runtime settings (e.g. `latency_median_ms=50, rate_limit_rps=20`); answers all of them."""
        return self.control("POST", "/config", settings)

    def reset_config(self) -> dict[str, Any]:
        """Every runtime setting back to what the command line gave."""
        return self.control("DELETE", "/config")

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self.control("DELETE", "/stats")

    def delays(self) -> list[dict[str, Any]]:
        """`{"path", "status", "delay_ms"}` of each of the last 10,000 `/api/v1` answers since the last stats reset,
        in the order answered: how long the emulator deliberately held each (latency, fault delays, hangs)."""
        return self.control("GET", "/delays")["delays"]

    def truth(self, day: dt.date) -> dict[str, Any]:
        """The day's ground truth: count, sorted ids, per model (slug) and per key (label), the catalogue."""
        return self.control("GET", "/truth", params={"date": day.isoformat()})

    def set_faults(self, rules: Sequence[dict[str, Any]], append: bool = False) -> list[dict[str, Any]]:
        """Scripted faults: `{"path", "status"?, "count", "retry_after"?, "delay_ms"?}` each; the rules now."""
        return self.control("POST", "/faults", {"rules": list(rules), "append": append})["rules"]

    def override_records(self, overrides: dict[str, dict[str, Any]]) -> None:
        """Make GET /generation answer these field values for these ids (any JSON value, NaN included)."""
        self.control("POST", "/records", {"overrides": overrides})

    def clear_overrides(self) -> None:
        self.control("DELETE", "/records")

    def clear_faults(self) -> None:
        self.control("DELETE", "/faults")

    def add_generations(self, day: dt.date, count: int, at: dt.datetime | str | None = None) -> list[str]:
        """`count` late generations on `day`, visible from now (all at the instant `at` when given); their ids."""
        body: dict[str, Any] = {"date": day.isoformat(), "count": count}
        if at is not None:
            if isinstance(at, dt.datetime):
                if at.tzinfo is None:
                    raise ValueError("at must be timezone-aware")
                at = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body["at"] = at
        return self.control("POST", "/generations", body)["ids"]

    def broadcast_day(self, day: dt.date, url: str, *, token: str | None = None,
                      headers: Mapping[str, str] | None = None, limit: int | None = None,
                      connection_test: bool = False, wait_s: float = 600.0, **settings: Any) -> dict[str, Any]:
        """Push the day's deliveries to `url` (`Authorization: Bearer <token>` when given, plus `headers`) with
        Broadcast settings such as `drop_share=0.1, concurrency=16` (`POST /_emulator/broadcast`); answers the
        counts when done: ids sent, delivered (2xx at least once), failed, dropped, duplicated, error spans,
        mismatched, answers by status, connection errors."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        body: dict[str, Any] = {"day": day.isoformat(), "url": url, "headers": sent, **settings}
        if limit is not None:
            body["limit"] = limit
        if connection_test:
            body["connection_test"] = True
        return self.control("POST", "/broadcast", body, timeout_s=wait_s)

    def broadcast_stats(self) -> dict[str, Any]:
        """The live pusher's counts (`--broadcast-url`), or `{"live": False}` without one."""
        return self.control("GET", "/broadcast")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _keys(extra_args: Sequence[str]) -> tuple[str, str]:
    """The keys the child will accept: the defaults unless `extra_args` overrides them."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--management-key", default="emulator-management-key")
    parser.add_argument("--inference-key", default="emulator-inference-key")
    known, _ = parser.parse_known_args(list(extra_args))
    return known.management_key, known.inference_key


def _start(arguments: list[str], log_path: Path, management_key: str, inference_key: str,
           env: Mapping[str, str]) -> EmulatorProcess:
    """One attempt on a fresh port; mirakuru raises if the child exits, never answers, or the port is taken."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "openrouter_emulator.server", "--host", "127.0.0.1", "--port", str(port),
               *arguments]
    with open(log_path, "ab") as log:  # the child keeps its own descriptor; no pipe that could fill and block it
        executor = HTTPExecutor(command, url=f"{base}/_emulator/config", status=200, method="GET",
                                request_timeout=2.0, timeout=STARTUP_TIMEOUT_S, sleep=0.05,
                                envvars={**env, "PYTHONUNBUFFERED": "1"},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        executor.start()
    return EmulatorProcess(f"{base}/api/v1", f"{base}/_emulator", management_key, inference_key, log_path, executor)


def start_emulator(*, seed: int = 7, generations_per_day: int = 2000, days: int = 3, extra_args: Sequence[str] = (),
                   log_path: Path | None = None, env: Mapping[str, str] | None = None) -> EmulatorProcess:
    """Start an emulator on a free loopback port and wait until it answers; the caller must `stop()` it.

    `env` adds environment variables to the child's (e.g. `EMULATOR_BROADCAST_TOKEN`, kept out of argv).
    """
    management_key, inference_key = _keys(extra_args)
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="openrouter-emulator-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    arguments = ["--seed", str(seed), "--generations-per-day", str(generations_per_day), "--days", str(days),
                 *extra_args]
    why = "not started"
    for _attempt in range(_START_ATTEMPTS):
        try:
            return _start(arguments, log_path, management_key, inference_key, env or {})
        except TimeoutExpired:  # alive but silent (mirakuru killed it): another port would not help
            why = f"did not answer within {STARTUP_TIMEOUT_S:.0f}s"
            break
        except ProcessExitedWithError as exc:
            why = f"exited with code {exc.exit_code}"
            if "address already in use" not in _log_tail(log_path).lower():
                break
        except AlreadyRunning:
            why = "found its port taken"
    raise EmulatorStartError(f"OpenRouter emulator {why} (log {log_path}):\n{_log_tail(log_path)}")


@contextmanager
def run_emulator(*, seed: int = 7, generations_per_day: int = 2000, days: int = 3, extra_args: Sequence[str] = (),
                 log_path: Path | None = None, env: Mapping[str, str] | None = None) -> Iterator[EmulatorProcess]:
    """An emulator for the duration of a `with` block."""
    emulator = start_emulator(seed=seed, generations_per_day=generations_per_day, days=days, extra_args=extra_args,
                              log_path=log_path, env=env)
    try:
        yield emulator
    finally:
        emulator.stop()
