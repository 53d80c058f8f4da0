"""How fast the emulator serves `GET /generation`: a small aiohttp load generator that prints figures.

    python -m openrouter_emulator.loadtest --concurrency 64 --seconds 5          # starts its own emulator
    python -m openrouter_emulator.loadtest --url http://127.0.0.1:8787 --key K   # or measures a running one
    python -m openrouter_emulator.loadtest --connections 1000 --latency-ms 1000  # hold 1,000 connections

It reports requests/s answered 200 (client side) and the emulator's own `served_per_second`,
`peak_served_per_second` and `max_in_flight`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
import urllib.request
from contextlib import ExitStack
from typing import Any


async def _hammer(base: str, key: str, ids: list[str], concurrency: int, seconds: float) -> tuple[int, int, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}"}
    ok = failed = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def worker(offset: int) -> None:
            nonlocal ok, failed
            i = offset
            while time.monotonic() < deadline:
                async with session.get(f"{base}/api/v1/generation", params={"id": ids[i % len(ids)]}) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        failed += 1
                i += concurrency
        started = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return ok, failed, time.monotonic() - started


async def _hammer_raw(base: str, key: str, ids: list[str], concurrency: int,
                      seconds: float) -> tuple[int, int, float]:
    """The same load from a minimal keep-alive HTTP/1.1 client on raw asyncio streams (little client CPU)."""
    from urllib.parse import quote, urlsplit

    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests_ = [(f"GET /api/v1/generation?id={quote(i)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Authorization: Bearer {key}\r\n\r\n").encode() for i in ids]
    ok = failed = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        try:
            while time.monotonic() < deadline:
                writer.write(requests_[i % len(requests_)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    failed += 1
                i += concurrency
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return ok, failed, time.monotonic() - started


async def _hold(base: str, key: str, ids: list[str], connections: int) -> tuple[int, float]:
    """`connections` simultaneous keep-alive connections, one GET each; how many answered 200."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        async def one(i: int) -> int:
            async with session.get(f"{base}/api/v1/generation", params={"id": ids[i % len(ids)]}) as response:
                await response.read()
                return response.status
        started = time.monotonic()
        statuses = await asyncio.gather(*(one(i) for i in range(connections)))
        return sum(s == 200 for s in statuses), time.monotonic() - started


def _control(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/_emulator{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running emulator's root (default: start one)")
    parser.add_argument("--key", default="emulator-management-key")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=0, help="instead: hold this many connections at once")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the emulator's latency_median_ms meanwhile")
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                        help="raw: a minimal keep-alive HTTP/1.1 client (fast, so the server is what is measured); "
                             "aiohttp: aiohttp's ClientSession (itself ~2x the server's CPU per request)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="the started emulator's event loop")
    args = parser.parse_args(argv)

    from openrouter_emulator.process import start_emulator
    from openrouter_emulator.server import raise_open_files_limit

    raise_open_files_limit()
    with ExitStack() as stack:
        base, pid = args.url, None
        if base is None:
            emulator = start_emulator(days=1, extra_args=["--loop", args.loop])
            stack.callback(emulator.stop)
            base, pid = emulator.control_url.rsplit("/_emulator", 1)[0], emulator.pid
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        ids = _control(base, "GET", f"/truth?date={yesterday.isoformat()}")["ids"]
        _control(base, "POST", "/config", {"latency_median_ms": args.latency_ms,
                                           "latency_sigma": 0.0 if args.connections else 0.6})
        _control(base, "DELETE", "/stats")
        if args.connections:
            ok, seconds = asyncio.run(_hold(base, args.key, ids, args.connections))
            stats = _control(base, "GET", "/stats")
            print(f"{args.connections} simultaneous connections: {ok} answered 200 in {seconds:.2f} s; "
                  f"emulator max_in_flight {stats['max_in_flight']}")
        else:
            cpu_before = _cpu_seconds(pid)
            hammer = _hammer_raw if args.client == "raw" else _hammer
            ok, failed, seconds = asyncio.run(hammer(base, args.key, ids, args.concurrency, args.seconds))
            cpu = _cpu_seconds(pid) - cpu_before
            stats = _control(base, "GET", "/stats")
            print(f"GET /generation, {args.concurrency} concurrent {args.client} clients, "
                  f"latency {args.latency_ms:g} ms: "
                  f"{ok / seconds:,.0f} requests/s answered 200 ({ok} in {seconds:.1f} s, {failed} not 200); "
                  f"emulator served {stats['served_per_second']:,.0f}/s, peak {stats['peak_served_per_second']:,}/s, "
                  f"max_in_flight {stats['max_in_flight']}"
                  + (f"; emulator CPU {cpu / max(1, ok + failed) * 1e6:.0f} us/request, i.e. "
                     f"{(ok + failed) / cpu:,.0f} requests/s per busy core" if pid and cpu > 0 else ""))


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a Linux process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    main()
