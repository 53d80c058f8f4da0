"""A private `redis-server` for the Celery engine test: Debian's binary on a free loopback port, nothing on
disk beyond its temp directory, stopped with the test (mirakuru, as influxd and the emulator are)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mirakuru import TCPExecutor

from usage_pipeline_tests.dagster_dev import free_port


@contextmanager
def run_redis(root: Path) -> Iterator[str]:
    """A running redis-server; yields its URL (`redis://127.0.0.1:<port>/0`)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is installed by bin/setup (Debian's redis-server)"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root), "--save", "",
               "--appendonly", "no", "--logfile", str(root / "redis.log")]
    server = TCPExecutor(command, host="127.0.0.1", port=port, timeout=30, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    server.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()
