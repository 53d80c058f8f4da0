"""The push path's real processes for tests: `usage-pipeline receive` on a free port (mirakuru waits for its
/health), and Broadcast deliveries shaped like the real ones (`../shared/openrouter/real-payloads/broadcast/`),
posted over HTTP."""

from __future__ import annotations

import copy
import gzip
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mirakuru import HTTPExecutor

REAL = Path(__file__).resolve().parents[2] / "shared" / "openrouter" / "real-payloads" / "broadcast"
TOKEN = "test-broadcast-token-3f9a"  # noqa: S105 - a throwaway token the tests check never leaks
CONNECTION_TEST = "00-connection-test-2026-09-28.json"
CODEX = "01-codex-gpt-5.1-codex-mini-azure-2026-09-28.delivery1.json"
ERROR_SPAN = "02-codex-error-span-client-disconnected-2026-09-28.ELIDED.json"
HAIKU = "03-pi-claude-haiku-4.5-bedrock-no-session-2026-09-28.delivery1.json"


def real(name: str) -> dict[str, Any]:
    return json.loads((REAL / name).read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Receiver:
    url: str  # the deliveries' URL
    base: str
    journal: Path
    executor: HTTPExecutor
    log_path: Path

    def post(self, body: Any, *, token: str | None = TOKEN, gzipped: bool = False,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if gzipped:
            data, sent["Content-Encoding"] = gzip.compress(data), "gzip"
        return requests.post(self.url, data=data, headers=sent, timeout=30)

    def health(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.base}/health", timeout=10).json())

    def kill(self) -> None:
        self.executor.kill()


def receiver_env(journal: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROADCAST_")}
    env.update(BROADCAST_TOKEN=TOKEN, BROADCAST_JOURNAL_PATH=str(journal), **extra)
    return env


@contextmanager
def run_receiver(journal: Path, log_path: Path, **env: str) -> Iterator[Receiver]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "usage_pipeline.cli", "receive", "--port", str(port)]
    with log_path.open("ab") as log:
        executor = HTTPExecutor(command, url=f"{base}/health", timeout=30, envvars=receiver_env(journal, **env),
                                stdout=log, stderr=log)
        executor.start()
    receiver = Receiver(f"{base}/v1/traces", base, journal, executor, log_path)
    try:
        yield receiver
    finally:
        if executor.running():
            executor.stop()


def delivery(template: str, gen_id: str, *, start_ns: int | None = None, cost: float | None = None,
             input_tokens: int | None = None, output_tokens: int | None = None, key_name: str | None = None,
             ints_as_strings: bool = False) -> dict[str, Any]:
    """A real delivery with the generation's figures put in (every span and the resource carry its id)."""
    body = copy.deepcopy(real(template))
    values = {"gen_ai.response.id": {"stringValue": gen_id},
              "trace.metadata.openrouter.api_key_name": {"stringValue": key_name} if key_name else None,
              "gen_ai.usage.total_cost": {"doubleValue": cost} if cost is not None else None,
              "gen_ai.usage.input_tokens": {"intValue": input_tokens} if input_tokens is not None else None,
              "gen_ai.usage.output_tokens": {"intValue": output_tokens} if output_tokens is not None else None}
    for resource in body["resourceSpans"]:
        for attribute in resource["resource"]["attributes"]:
            if attribute["key"] == "openrouter.trace.id":
                attribute["value"] = {"stringValue": gen_id}
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                if span["name"] != "LLM Generation":
                    continue
                if start_ns is not None:
                    span["startTimeUnixNano"] = str(start_ns)
                for attribute in span["attributes"]:
                    if values.get(attribute["key"]) is not None:
                        attribute["value"] = values[attribute["key"]]
                    if ints_as_strings and "intValue" in attribute["value"]:
                        attribute["value"] = {"intValue": str(attribute["value"]["intValue"])}
    return body
