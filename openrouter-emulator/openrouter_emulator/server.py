"""A local HTTP emulator of the OpenRouter usage API (`/api/v1`), faithful to the official spec and as hostile.

OpenRouter cannot be reached from here, so clients are tested against this server: same paths, same
auth rules, same response shapes and error bodies, the same lack of a generation listing; plus what the
real service does to a client under load (latency with a long tail, hangs, an account-wide rate limit,
a CDN's HTML error pages, label-named analytics), each switchable by a CLI flag and at runtime through
the `/_emulator` control API, which also tells tests the ground truth.

This module is the HTTP front and the entry point (`openrouter-emulator`, `python -m
openrouter_emulator.server`): `aiohttp` (keep-alive, a 4,096 backlog, no access log so no key can leak),
one event loop holding thousands of connections, in front of `emulator.Emulator`, the whole request ->
response logic without HTTP. The flags are `cli_arguments`, the runtime settings `runtime_config`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from openrouter_emulator.broadcast_live import live_settings
from openrouter_emulator.cli_arguments import CONTROL_HELP, add_cli_arguments, build_parser
from openrouter_emulator.emulator import API_PREFIX, CONTROL_PREFIX, Emulator
from openrouter_emulator.faults import error_body
from openrouter_emulator.protocol import Response
from openrouter_emulator.runtime_config import RuntimeConfig
from openrouter_emulator.stats import Stats

# Importable from here as before the emulator, its flags, settings and counters had modules of their own.
__all__ = [
    "API_PREFIX", "BACKLOG", "CONTROL_HELP", "CONTROL_PREFIX", "Emulator", "RuntimeConfig", "Stats",
    "add_cli_arguments", "build_parser", "main", "make_http_handler", "raise_open_files_limit", "serve_async",
    "serve_from_args",
]

BACKLOG = 4096


def _params(query: Mapping[str, str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in query.items():  # a MultiDict: repeated names come once each
        params.setdefault(name, []).append(value)
    return params


def make_http_handler(emulator: Emulator) -> Callable[[Any], Awaitable[Any]]:
    """The aiohttp low-level handler in front of `Emulator.handle`."""
    from aiohttp import web

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        try:
            body = await request.read() if request.body_exists else b""
            response = await emulator.handle(request.method, request.path, _params(request.query),
                                             request.headers.get("Authorization"), body)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise  # the client went away: nothing to answer
        except Exception:  # noqa: BLE001 - an emulator bug must still answer in the spec's shape
            traceback.print_exc(file=sys.stderr)
            response = Response(500, error_body(500), {})
        if response.raw is not None:
            data = response.raw
        else:
            # NaN/Infinity reach an answer only through a hostile record override, on purpose.
            data = json.dumps(response.payload, separators=(",", ":"), allow_nan=True).encode()
        headers = {"Content-Type": response.content_type, **response.headers}
        return web.Response(status=response.status, body=data, headers=headers)

    return serve


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (1,000+ connections need descriptors)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


async def serve_async(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when this runs in the main thread)."""
    from aiohttp import web

    emulator = Emulator(args)
    server = web.Server(make_http_handler(emulator), handler_cancellation=True, access_log=None,
                        keepalive_timeout=75.0)
    runner = web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port, backlog=BACKLOG)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"OpenRouter emulator listening on http://{host}:{port}{API_PREFIX} "
              f"(seed {args.seed}, {args.generations_per_day} generations/day, {args.days} days, "
              f"{args.history_days} history days; "
              f"loop {type(asyncio.get_running_loop()).__module__})", flush=True)
        emulator.start_background()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread: the caller owns signals
                pass
        await stop.wait()
    finally:
        await emulator.stop_background()
        await runner.cleanup()
        emulator.close()
        print("OpenRouter emulator stopped", flush=True)


def _run(coroutine: Any, loop_kind: str) -> None:
    if loop_kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop_kind == "uvloop":
                raise
        else:
            uvloop.run(coroutine)
            return
    asyncio.run(coroutine)


def serve_from_args(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    try:
        live_settings(args, args.seed)  # `--broadcast-*` flags that do not fit together: one line, no traceback
    except ValueError as exc:
        raise SystemExit(f"openrouter-emulator: error: {exc}") from None
    raise_open_files_limit()
    _run(serve_async(args), getattr(args, "loop", "auto"))


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        live_settings(args, args.seed)  # flags that do not fit together: a usage error, before serving
    except ValueError as exc:
        parser.error(str(exc))
    serve_from_args(args)


if __name__ == "__main__":
    main()
