"""What every test tier promises: a test marked `pure` starts no process and opens no socket, so the pure tier
(`pytest -m pure`) runs anywhere in seconds. A pure test that asks for a server fixture, starts a process or
connects a socket fails, naming what it did."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

SERVER_FIXTURES = frozenset({"influxd", "store", "emulator", "no_faults", "redis", "postgres"})


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("pure") is not None:
        servers = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if servers:
            pytest.fail(f"{item.name} is marked pure but asks for {sorted(servers)}")


@pytest.fixture(autouse=True)
def _pure_tests_touch_no_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("pure") is not None:
        def refuse(what: str) -> Any:
            def refused(*args: Any, **kwargs: Any) -> Any:
                raise AssertionError(f"a pure test must not {what}")
            return refused

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse("start a process"))
        monkeypatch.setattr(socket.socket, "connect", refuse("connect a socket"))
        monkeypatch.setattr(socket.socket, "bind", refuse("bind a socket"))
    yield
