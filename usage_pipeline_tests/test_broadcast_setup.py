"""`usage-pipeline broadcast-setup` as users type it, a real process against a real emulator process: it creates
the organisation's webhook destination with the bearer token and the attributes the push path needs, a second
run updates that same destination, no run prints the token or a key, and each wrong input is one line that
sets nothing. An answer that does not say what was asked (a scripted server) is an error, not a success."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from openrouter_emulator.process import EmulatorProcess, run_emulator
from usage_pipeline.broadcast.setup import set_up
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.openrouter.source import OpenRouterClient
from usage_pipeline_tests.scripted_http import scripted_server

TOKEN = "broadcast-token-4f9c2a7e1b"  # noqa: S105 - a test value
URL = "https://usage.example.com/v1/traces"
NEEDED = {"type": "webhook", "enabled": True, "sampling_rate": 1, "privacy_mode": True,
          "broadcast_generation_cost": True, "broadcast_generation_identity": True, "api_key_hashes": None,
          "filter_rules": None}
Stored = Callable[[], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("broadcast_setup") / "emulator.log"
    with run_emulator(seed=5, generations_per_day=100, days=1, log_path=log) as server:
        yield server
    assert TOKEN not in log.read_text()


def api(emu: EmulatorProcess, method: str, path: str = "", **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emu.base_url}/observability/destinations{path}", timeout=30,
                            headers={"Authorization": f"Bearer {emu.management_key}"}, **kwargs)


@pytest.fixture
def stored(emu: EmulatorProcess) -> Iterator[Stored]:
    """The destinations as the emulator stores them (header values unmasked); none before or after a test."""
    def read() -> list[dict[str, Any]]:
        return list(emu.control("GET", "/destinations")["data"])

    assert read() == []
    yield read
    for destination in read():
        assert api(emu, "DELETE", f"/{destination['id']}").status_code == 200


def setup_command(emu: EmulatorProcess, *args: str, key: str | None = None, token: str | None = TOKEN,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, with the emulator as OpenRouter; checks that nothing it printed
    holds the token or a key, or a traceback."""
    exe = shutil.which("usage-pipeline")
    command = [exe] if exe else [sys.executable, "-m", "usage_pipeline.cli"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "BROADCAST_", "USAGE_"))}
    environ.update(OPENROUTER_API_KEY=key or emu.management_key, OPENROUTER_BASE_URL=emu.base_url, **(env or {}))
    if token is not None:
        environ["BROADCAST_TOKEN"] = token
    out = subprocess.run([*command, "broadcast-setup", *args], env=environ, capture_output=True, text=True,
                         timeout=120)
    shown = out.stdout + out.stderr
    for secret in (TOKEN, token or TOKEN, emu.management_key, emu.inference_key, key or emu.management_key):
        assert secret not in shown, shown
    assert "Traceback" not in shown, shown
    return out


def one_line_error(out: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert (out.returncode, out.stdout) == (code, ""), out
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("usage-pipeline broadcast-setup: ") and needle in out.stderr, out.stderr


def test_it_creates_the_destination_and_a_second_run_updates_that_one(emu: EmulatorProcess, stored: Stored) -> None:
    first = setup_command(emu, "--url", URL)
    assert first.returncode == 0, first.stderr
    [made] = stored()
    assert made == {**made, **NEEDED, "name": "usage_pipeline default"}
    assert made["config"] == {"url": URL, "method": "POST", "headers": {"Authorization": f"Bearer {TOKEN}"}}
    assert first.stdout.splitlines() == [
        f"broadcast-setup default: created destination {made['id']} (webhook, name 'usage_pipeline default')",
        f"  url: {URL} (POST)", "  headers: Authorization (values not shown)",
        "  enabled true, sampling_rate 1, privacy_mode true, broadcast_generation_cost true, "
        "broadcast_generation_identity true, api_key_hashes null, filter_rules null"]

    # Changed by hand since; then the receiver moves and its token is rotated.
    assert api(emu, "PATCH", f"/{made['id']}", json={"sampling_rate": 0.5, "broadcast_generation_identity": False,
                                                      "api_key_hashes": ["abc"]}).status_code == 200
    moved, rotated = "https://push.example.org/openrouter/v1/traces", "rotated-token-9d8e7f"
    second = setup_command(emu, "--url", moved, token=rotated)
    assert second.returncode == 0, second.stderr
    [updated] = stored()
    assert updated == {**made, **NEEDED, "updated_at": updated["updated_at"],
                       "config": {"url": moved, "method": "POST", "headers": {"Authorization": f"Bearer {rotated}"}}}
    assert second.stdout.splitlines()[:2] == [
        f"broadcast-setup default: updated destination {made['id']} (webhook, name 'usage_pipeline default')",
        f"  url: {moved} (POST)"]


def test_each_organisation_sets_its_own_destination(emu: EmulatorProcess, stored: Stored, tmp_path: Path) -> None:
    orgs = tmp_path / "organisations.yaml"
    orgs.write_text("organisations:\n  - {name: acme, key_variable: ACME_KEY}\n"
                    "  - {name: globex, key_variable: GLOBEX_KEY}\n")
    env = {"USAGE_ORGANISATIONS": str(orgs), "ACME_KEY": emu.management_key, "GLOBEX_KEY": emu.management_key}
    one_line_error(setup_command(emu, "--url", URL, env=env), 2, "lists 2 organisations (acme, globex): name one "
                                                                 "with --org")
    one_line_error(setup_command(emu, "--url", URL, "--org", "initech", env=env), 2,
                   "organisation 'initech' is not configured")
    assert stored() == []
    for org in ("acme", "globex"):
        out = setup_command(emu, "--url", URL, "--org", org, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"broadcast-setup {org}: created destination ")
    assert sorted(d["name"] for d in stored()) == ["usage_pipeline acme", "usage_pipeline globex"]


@pytest.mark.parametrize(("case", "code", "needle"), [
    ("inference key", 1, "OpenRouter refused the key in OPENROUTER_API_KEY (403)"),
    ("unknown key", 1, "OpenRouter refused the key in OPENROUTER_API_KEY (401)"),
    ("http url", 2, "--url must be an https:// URL with a host"),
    ("url without a host", 2, "--url must be an https:// URL with a host"),
    ("no token", 2, "BROADCAST_TOKEN is not set"),
])
def test_wrong_input_is_one_line_and_sets_nothing(emu: EmulatorProcess, stored: Stored, case: str, code: int,
                                                  needle: str) -> None:
    url = {"http url": "http://usage.example.com/v1/traces", "url without a host": "https:///v1/traces"}.get(case, URL)
    key = {"inference key": emu.inference_key, "unknown key": "sk-or-v1-not-a-key-5e6f"}.get(case)
    one_line_error(setup_command(emu, "--url", url, key=key, token=None if case == "no token" else TOKEN), code, needle)
    assert stored() == []


def test_two_destinations_of_its_name_are_named_and_left_alone(emu: EmulatorProcess, stored: Stored) -> None:
    body = {"type": "webhook", "name": "usage_pipeline default", "config": {"url": URL}}
    ids = [api(emu, "POST", json=body).json()["data"]["id"] for _ in range(2)]
    before = stored()
    one_line_error(setup_command(emu, "--url", URL), 1, f"2 webhook destinations are named 'usage_pipeline "
                                                        f"default' ({ids[0]}, {ids[1]}): delete all but one")
    assert stored() == before


class _DestinationServer(BaseHTTPRequestHandler):
    """An OpenRouter whose list is empty and whose create answers the destination with `replies[0]` changed."""

    replies: list[dict[str, Any]] = []
    seen: list[str] = []

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._answer(200, {"data": [], "total_count": 0})

    def do_POST(self) -> None:  # noqa: N802
        asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer(201, {"data": {**asked, "id": "5e1f0000-0000-4000-8000-000000000001", **type(self).replies[0]}})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("answered", "named"), [
    ({"broadcast_generation_cost": False}, "broadcast_generation_cost false"),
    ({"sampling_rate": 0.1}, "sampling_rate 0.1"),
    ({"config": {"url": URL, "method": "POST"}}, "no Authorization header"),
    ({"config": {"url": "https://elsewhere.example.com/v1/traces", "headers": {"Authorization": "********"}}},
     "url 'https://elsewhere.example.com/v1/traces'"),
])
def test_an_answer_that_differs_from_what_was_asked_is_an_error(answered: dict[str, Any], named: str) -> None:
    with scripted_server(_DestinationServer) as (host, handler):
        handler.replies.append(answered)
        settings = OpenRouterSettings(api_key="sk-or-v1-scripted", base_url=f"http://{host}/api/v1")
        with OpenRouterClient(settings) as client, pytest.raises(OpenRouterError) as refused:
            set_up(client, "default", URL, TOKEN)
    assert str(refused.value) == (f"destination 5e1f0000-0000-4000-8000-000000000001 was created, but OpenRouter "
                                  f"answered {named}")
    assert handler.seen == ["GET /api/v1/observability/destinations?offset=0&limit=100",
                            "POST /api/v1/observability/destinations"]
