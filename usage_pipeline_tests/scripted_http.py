"""A real HTTP server on a free loopback port whose handler class scripts the answers, for tests of a
client's retries and error handling against statuses a real server rarely gives on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

Handler = TypeVar("Handler", bound=BaseHTTPRequestHandler)


@contextmanager
def scripted_server(base: type[Handler]) -> Iterator[tuple[str, type[Handler]]]:
    """Serve a fresh subclass of `base` (its `replies` and `seen` lists start empty) in a thread;
    yield ("127.0.0.1:<port>", the subclass), so a test scripts and inspects it through class attributes."""
    handler = type("Handler", (base,), {"replies": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
