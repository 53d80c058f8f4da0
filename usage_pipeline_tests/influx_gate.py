"""A gate in front of a real influxd that serves only what InfluxDB 2.x's or 3.x's v1 API serves, answering
`/ping` as that server does. Neither server installs here (../shared/influxdb/FACTS.md), so this is how the
ledger is held to their grammar: a statement they would refuse is refused with a 400, and every statement is
logged, so a test can say what a run asked for.

3.x: only `/ping`, `/write` and `/query` with SELECT, EXPLAIN and SHOW FIELD KEYS / MEASUREMENTS / RETENTION
POLICIES / TAG KEYS / TAG VALUES (no CREATE, ALTER, DROP, DELETE). 2.x: SELECT, SHOW, DELETE and DROP
MEASUREMENT (no CREATE or ALTER). `python -m usage_pipeline_tests.influx_gate --upstream URL --port N
--version 3.1.0 --build Core --log FILE`; `run_gate` starts it for a test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from mirakuru import HTTPExecutor

from usage_pipeline_tests.dagster_dev import free_port

ALLOWED = {
    3: re.compile(r"\s*(SELECT|EXPLAIN|SHOW\s+(FIELD\s+KEYS|MEASUREMENTS|RETENTION\s+POLICIES|TAG\s+KEYS|TAG\s+VALUES))"
                  r"\b", re.IGNORECASE),
    2: re.compile(r"\s*(SELECT|SHOW|DELETE|DROP\s+MEASUREMENT)\b", re.IGNORECASE),
}


def gate_app(upstream: str, version: str, build: str, log: Path) -> web.Application:
    major = int(version.lstrip("v").split(".")[0])
    allowed = ALLOWED[major]
    client: dict[str, aiohttp.ClientSession] = {}

    async def databases() -> set[str]:
        async with client["session"].get(f"{upstream}/query", params={"q": "SHOW DATABASES"}) as answer:
            series = (await answer.json())["results"][0].get("series") or [{}]
            return {row[0] for row in series[0].get("values") or []}

    async def start(_: web.Application) -> None:
        client["session"] = aiohttp.ClientSession(read_bufsize=1 << 24)

    async def stop(_: web.Application) -> None:
        await client["session"].close()

    async def ping(_: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-Influxdb-Version": version, "X-Influxdb-Build": build})

    async def forward(request: web.Request, data: bytes | dict[str, str] | None) -> web.StreamResponse:
        async with client["session"].request(request.method, f"{upstream}{request.path}", params=request.query,
                                             data=data) as answer:
            response = web.StreamResponse(status=answer.status, headers={
                name: answer.headers[name] for name in ("Content-Type",) if name in answer.headers})
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def write(request: web.Request) -> web.StreamResponse:
        return await forward(request, await request.read())

    async def query(request: web.Request) -> web.StreamResponse:
        form = dict(await request.post()) if request.method == "POST" else {}
        statement = str(form.get("q") or request.query.get("q", ""))
        refused = [part for part in statement.split(";") if part.strip() and not allowed.match(part)]
        with log.open("a") as out:
            out.write(f"{'REFUSED' if refused else 'served'}\t{' '.join(statement.split())}\n")
        if refused:
            return web.json_response({"error": f"InfluxDB {version} does not support: {refused[0].strip()[:80]}"},
                                     status=400)
        db = str(form.get("db") or request.query.get("db", ""))
        if db and db not in await databases():  # 1.x answers an empty result here; 2.x and 3.x a 404
            body = ({"error": f"database not found: {db}"} if major == 3
                    else {"code": "not found", "message": f'database "{db}" not found'})
            return web.json_response(body, status=404)
        return await forward(request, {name: str(value) for name, value in form.items()} or None)

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("GET", "/ping", ping)
    app.router.add_route("HEAD", "/ping", ping)
    app.router.add_post("/write", write)
    app.router.add_route("*", "/query", query)
    return app


def statements(log: Path) -> list[tuple[str, str]]:
    """(served or REFUSED, statement) of every /query the gate saw, in order."""
    if not log.exists():
        return []
    return [tuple(line.split("\t", 1)) for line in log.read_text().splitlines()]  # type: ignore[misc]


@contextmanager
def run_gate(upstream: str, log: Path, *, version: str = "3.1.0", build: str = "Core") -> Iterator[str]:
    """The gate as its own process in front of `upstream`; yields its URL, stopped after."""
    port = free_port()
    command = [sys.executable, "-m", "usage_pipeline_tests.influx_gate", "--upstream", upstream, "--port",
               str(port), "--version", version, "--build", build, "--log", str(log)]
    gate = HTTPExecutor(command, url=f"http://127.0.0.1:{port}/ping", status="204", timeout=60,
                        stdin=subprocess.DEVNULL)
    with gate:
        yield f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default="3.1.0")
    parser.add_argument("--build", default="Core")
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(gate_app(args.upstream.rstrip("/"), args.version, args.build, args.log), host="127.0.0.1",
                port=args.port, print=None)


if __name__ == "__main__":
    main()
