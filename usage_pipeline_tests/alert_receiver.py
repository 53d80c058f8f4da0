"""What the alert sensors of a real `dg dev` post, as a Slack incoming webhook would receive it, and the budget
one API key of a test organisation crosses on one day only.

`AlertReceiver` is a plain HTTP server on a free loopback port in the test process: it records every JSON
body POSTed to its secret-looking path and answers 200 as Slack does. Tests wait on its recorded bodies and on
the sensors' ticks (GraphQL), never on a clock.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from usage_pipeline_tests.dagster_dev import DagsterDev
from usage_pipeline_tests.usage_history import ledger_frame, usage_dataset


@dataclass(frozen=True)
class Posted:
    """One alert as received: Slack's `text`, and the organisation, day and figure from its fields."""

    text: str
    headline: str
    org: str
    day: str
    figure: str


class AlertReceiver:
    def __init__(self) -> None:
        self.secret = f"/services/T0TEST/B0TEST/{uuid.uuid4().hex}"  # the part of a Slack URL that is the secret
        self.bodies: list[dict[str, Any]] = []
        self.refused: list[str] = []  # requests to any other path or not JSON
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    parsed = json.loads(body) if self.path == receiver.secret else None
                except ValueError:
                    parsed = None
                with receiver._lock:
                    if isinstance(parsed, dict):
                        receiver.bodies.append(parsed)
                    else:
                        receiver.refused.append(self.path)
                self.send_response(200 if isinstance(parsed, dict) else 404)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.secret}"

    def posted(self) -> list[Posted]:
        with self._lock:
            bodies = list(self.bodies)
        return [_read(body) for body in bodies]

    def wait_for(self, enough: Callable[[list[Posted]], bool], what: str, timeout_s: float = 180) -> list[Posted]:
        deadline = time.monotonic() + timeout_s
        while not enough(posted := self.posted()):
            assert time.monotonic() < deadline, f"no {what} after {timeout_s} s; received: {posted}"
            time.sleep(0.5)
        return posted


def _read(body: dict[str, Any]) -> Posted:
    """A Slack-shaped body: `text`, a header section, and a section whose fields are `*Name*\\nvalue`."""
    fields = {}
    for block in body["blocks"]:
        for item in block.get("fields", []):
            name, _, value = item["text"].partition("\n")
            fields[name.strip("*")] = value
    return Posted(body["text"], body["blocks"][0]["text"]["text"].strip("*"), fields["Organisation"], fields["Day"],
                  fields["Figure"])


@contextmanager
def alert_receiver() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    thread = threading.Thread(target=receiver._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class KeyBudget:
    """A daily budget for one API key (label) that its spend crosses on `crossed_day` only."""

    key: str
    usd: float
    spend: dict[dt.date, float]  # the key's spend (sum of usage) each day

    @property
    def crossed_day(self) -> dt.date:
        return max(self.spend, key=lambda day: self.spend[day])


def key_budget_crossed_once(days: list[dt.date], generations_per_day: int, seed: int,
                            truth: Callable[[dt.date], dict[str, Any]]) -> KeyBudget:
    """The key whose spend differs most between the days, with a budget halfway: crossed on one day alone.
    The spend comes from the emulator's own dataset (the organisation's seed), checked against its truth."""
    dataset = usage_dataset(days, generations_per_day, seed)
    spend: dict[str, dict[dt.date, float]] = {}
    for day in days:
        frame = ledger_frame(dataset, day)
        assert frame.groupby("api_key").size().to_dict() == truth(day)["by_api_key"], day  # the emulator's data
        for key, usd in frame.groupby("api_key")["usage"].sum().items():
            spend.setdefault(str(key), {})[day] = float(usd)
    key = max(spend, key=lambda k: abs(spend[k].get(days[0], 0) - spend[k].get(days[-1], 0)))
    low, high = sorted(spend[key].get(day, 0.0) for day in days)
    assert high - low > 0.02, spend[key]  # a budget between them is crossed by cents at least
    return KeyBudget(key, round((low + high) / 2, 2), {day: spend[key].get(day, 0.0) for day in days})


SENSOR = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { __typename
    ... on Sensor { sensorState { status ticks(limit: 1) { timestamp status skipReason cursor } } } } }"""
SET_CURSOR = """mutation($selector: SensorSelector!, $cursor: String) {
    setSensorCursor(sensorSelector: $selector, cursor: $cursor) { __typename ... on PythonError { message } } }"""


def sensor_selector(server: DagsterDev, name: str) -> dict[str, str]:
    data = server.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } "
                          "}")
    repo = data["repositoriesOrError"]["nodes"][0]
    return {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"], "sensorName": name}


def sensor_state(server: DagsterDev, name: str) -> dict[str, Any]:
    found = server.graphql(SENSOR, {"selector": sensor_selector(server, name)})["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    return dict(found["sensorState"])


def wait_for_tick_after(server: DagsterDev, name: str, after: float, timeout_s: float = 120) -> dict[str, Any]:
    """Until sensor `name` has a tick that started after `after` (a timestamp) and ended; that tick."""
    deadline = time.monotonic() + timeout_s
    while True:
        ticks = sensor_state(server, name)["ticks"]
        if ticks and ticks[0]["timestamp"] > after and ticks[0]["status"] != "STARTED":
            return dict(ticks[0])
        assert time.monotonic() < deadline, f"{name}: no tick after {after} within {timeout_s} s: {ticks}"
        time.sleep(0.5)


def set_sensor_cursor(server: DagsterDev, name: str, cursor: str) -> None:
    done = server.graphql(SET_CURSOR, {"selector": sensor_selector(server, name), "cursor": cursor})
    assert done["setSensorCursor"]["__typename"] == "Sensor", done
