"""A tiny webhook for the Broadcast tests: an aiohttp server in a thread that keeps every POST as it came.

It sees the raw bytes (no transparent gunzip), so a test can tell a gzipped body from a plain one, and it
answers each POST with the status `answer(delivery id, nth POST of that id)` chooses, so a test can refuse
some deliveries and check what the pusher counted as delivered.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Post:
    at: float  # time.time() when the body had arrived
    headers: dict[str, str]
    raw: bytes
    body: Any  # parsed JSON (gunzipped first when Content-Encoding says gzip)
    status: int  # what the receiver answered

    @property
    def gzipped(self) -> bool:
        return self.headers.get("Content-Encoding") == "gzip"

    @property
    def delivery_id(self) -> str | None:
        """The generation id (`openrouter.trace.id` of the first resource), None for the connection test."""
        for attribute in self.body["resourceSpans"][0]["resource"]["attributes"]:
            if attribute["key"] == "openrouter.trace.id":
                return str(attribute["value"]["stringValue"])
        return None


def _ok(_gen_id: str | None, _nth: int) -> int:
    return 200


@dataclass
class Receiver:
    url: str
    answer: Callable[[str | None, int], int] = _ok
    posts: list[Post] = field(default_factory=list)
    _seen: Counter[str | None] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self, answer: Callable[[str | None, int], int] = _ok) -> None:
        with self._lock:
            self.posts.clear()
            self._seen.clear()
            self.answer = answer

    def snapshot(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def deliveries(self) -> list[Post]:
        return [p for p in self.snapshot() if p.delivery_id is not None]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Post]:
        deadline = time.monotonic() + timeout_s
        while len(self.snapshot()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.snapshot()

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        data = gzip.decompress(raw) if headers.get("Content-Encoding") == "gzip" else raw
        body = json.loads(data)
        with self._lock:
            post = Post(time.time(), headers, raw, body, 0)
            self._seen[post.delivery_id] += 1
            status = self.answer(post.delivery_id, self._seen[post.delivery_id])
            self.posts.append(Post(post.at, headers, raw, body, status))
        return web.Response(status=status, text="{}", content_type="application/json")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def run_receiver(path: str = "/v1/traces") -> Iterator[Receiver]:
    """A receiver on a free loopback port for the duration of a `with` block."""
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}{path}")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        server = web.Server(receiver._handle, auto_decompress=False, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the test receiver did not start"
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
