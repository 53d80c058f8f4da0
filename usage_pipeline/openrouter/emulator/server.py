"""A local HTTP emulator of the OpenRouter usage API (`/api/v1`), faithful to the official spec.

OpenRouter cannot be reached from here, so the pipeline is tested against this server: same paths, same
auth rules, same response shapes and error bodies, the same lack of a generation listing, plus a
`/_emulator` control API that tells tests the ground truth and switches faults on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from usage_pipeline.openrouter.emulator.account import activity, credits_info, key_info
from usage_pipeline.openrouter.emulator.analytics import MAX_ANALYTICS_ROWS, run_query
from usage_pipeline.openrouter.emulator.analytics_catalogue import analytics_meta
from usage_pipeline.openrouter.emulator.analytics_query import parse_query
from usage_pipeline.openrouter.emulator.dataset import US_PER_SECOND, UsageDataset, generation_record
from usage_pipeline.openrouter.emulator.faults import FaultPlan, FaultRule, SlidingWindowLimiter, error_body
from usage_pipeline.openrouter.emulator.protocol import ApiError, Request, Response, error_response, query_param
from usage_pipeline.openrouter.generation import parse_created_at

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_emulator"


@dataclass(slots=True)
class RuntimeConfig:
    """The knobs tests may turn while the emulator runs (`POST /_emulator/config`)."""

    analytics_max_rows: int
    analytics_rpm: int
    fresh_404_seconds: float
    generation_404_first: int
    fault_rate: float
    slow_ms: int


# --- The emulator: routing, auth, faults, control API ------------------------------------------


class Emulator:
    """All state behind the HTTP server; `handle` is pure request in, response out (thread-safe)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.started_at = time.time()
        self.management_key: str = args.management_key
        self.inference_key: str = args.inference_key
        self.dataset = UsageDataset(seed=args.seed, generations_per_day=args.generations_per_day, days=args.days,
                                    late_generations=args.late_generations,
                                    late_visible_at=self.started_at + args.late_after)
        self.config = RuntimeConfig(args.analytics_max_rows, args.analytics_rpm, args.fresh_404_seconds,
                                    args.generation_404_first, args.fault_rate, args.slow_ms)
        self.faults = FaultPlan(seed=args.seed, fault_rate=args.fault_rate)
        self.limiter = SlidingWindowLimiter(args.analytics_rpm)
        self._lock = threading.Lock()
        self._gets: dict[str, int] = {}
        self._by_path: dict[str, dict[str, int]] = {}
        self._api_routes: dict[tuple[str, str], tuple[bool, Callable[[Request, float], Any]]] = {
            ("GET", "/activity"): (True, lambda r, now: activity(self.dataset, r.params, now)),
            ("GET", "/analytics/meta"): (True, lambda r, now: analytics_meta()),
            ("POST", "/analytics/query"): (True, lambda r, now: run_query(
                self.dataset, parse_query(r.json(), now), now, self.config.analytics_max_rows)),
            ("GET", "/credits"): (True, lambda r, now: credits_info(self.dataset, now)),
            ("GET", "/generation"): (False, self._generation),
            ("GET", "/key"): (False, lambda r, now: key_info(self.dataset, r.key or "", r.management, now)),
        }
        self._control_routes: dict[tuple[str, str], Callable[[Request, float], Any]] = {
            ("GET", "/truth"): self._truth,
            ("GET", "/faults"): lambda r, now: {"rules": self.faults.rules()},
            ("POST", "/faults"): self._set_faults,
            ("DELETE", "/faults"): lambda r, now: self._clear_faults(),
            ("GET", "/stats"): lambda r, now: self.stats(),
            ("DELETE", "/stats"): lambda r, now: self._reset_stats(),
            ("POST", "/generations"): self._add_generations,
            ("GET", "/config"): lambda r, now: asdict(self.config),
            ("POST", "/config"): self._set_config,
        }

    # -- dispatch --

    def handle(self, method: str, target: str, authorization: str | None, body: bytes) -> Response:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        params = parse_qs(url.query, keep_blank_values=True)
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self._control(Request(method, path[len(CONTROL_PREFIX):] or "/", params, body))
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            sub = path[len(API_PREFIX):] or "/"
            response = self._api(Request(method, sub, params, body), authorization)
            self._count(sub, response.status)
            return response
        return Response(404, error_body(404, "Not Found"), {})

    def _control(self, request: Request) -> Response:
        handler = self._control_routes.get((request.method, request.path))
        if handler is None:
            return Response(404, error_body(404, f"No control endpoint {request.method} {request.path}"), {})
        try:
            return Response(200, handler(request, time.time()), {})
        except ApiError as error:
            return error_response(error)

    def _api(self, request: Request, authorization: str | None) -> Response:
        if self.config.slow_ms > 0:
            time.sleep(self.config.slow_ms / 1000)
        fault = self.faults.next_fault(request.path)
        if fault is not None:
            if fault.delay_ms > 0:
                time.sleep(fault.delay_ms / 1000)
            if fault.status is not None:
                return error_response(ApiError(fault.status, retry_after=fault.retry_after))
        route = self._api_routes.get((request.method, request.path))
        if route is None:
            return Response(404, error_body(404, "Not Found"), {})
        management_only, handler = route
        try:
            key, management = self._authenticate(authorization)
            if management_only and not management:
                raise ApiError(403, "Only management keys can perform this operation")
            if request.path.startswith("/analytics/"):
                wait = self.limiter.acquire(hashlib.sha256(key.encode()).hexdigest())
                if wait is not None:
                    raise ApiError(429, "Rate limit exceeded", retry_after=wait)
            authed = Request(request.method, request.path, request.params, request.body, key, management)
            return Response(200, handler(authed, time.time()), {})
        except ApiError as error:
            return error_response(error)

    def _authenticate(self, authorization: str | None) -> tuple[str, bool]:
        """(key, is management key); the key itself never appears in any message or log."""
        if not authorization:
            raise ApiError(401, "Missing Authentication header")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "Missing Authentication header")
        if key == self.management_key:
            return key, True
        if key == self.inference_key:
            return key, False
        raise ApiError(401, "User not found.")

    # -- /generation --

    def _generation(self, request: Request, now: float) -> Any:
        gen_id = query_param(request.params, "id")
        if not gen_id:
            raise ApiError(400, "Missing required query parameter: id")
        first_404 = self.config.generation_404_first
        if first_404 > 0:
            with self._lock:
                seen = self._gets[gen_id] = self._gets.get(gen_id, 0) + 1
            if seen <= first_404:
                raise ApiError(404, f"Generation {gen_id} not found")
        found = self.dataset.find(gen_id, now)
        if found is None:
            raise ApiError(404, f"Generation {gen_id} not found")
        day, row = found
        created_s = int(day.columns.created_us[row]) / US_PER_SECOND
        if day.columns.visible_at[row] > now or now - created_s < self.config.fresh_404_seconds:
            raise ApiError(404, f"Generation {gen_id} not found")
        return {"data": generation_record(day, row)}

    # -- control --

    def _truth(self, request: Request, now: float) -> Any:
        return self.dataset.truth(_control_date(query_param(request.params, "date")), now)

    def _set_faults(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            raise ApiError(400, 'body must be {"rules": [...]}')
        try:
            rules = [FaultRule.from_json(r) for r in body["rules"]]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ApiError(400, f"bad fault rule: {exc}") from None
        if body.get("append"):
            self.faults.add_rules(rules)
        else:
            self.faults.replace_rules(rules)
        return {"rules": self.faults.rules()}

    def _clear_faults(self) -> Any:
        self.faults.replace_rules([])
        return {"rules": []}

    def _add_generations(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, 'body must be {"date": "YYYY-MM-DD", "count": n, "at"?: ISO date-time}')
        date = _control_date(body.get("date"))
        count = body.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise ApiError(400, "count must be an integer from 1 to 1,000,000")
        at = body.get("at")
        try:
            at_us = None if at is None else int(
                (parse_created_at(str(at)) - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) / dt.timedelta(microseconds=1))
            ids = self.dataset.add_generations(date, count, now, at_us)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {"date": date.isoformat(), "count": len(ids), "ids": ids}

    def _set_config(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object of settings")
        current = asdict(self.config)
        unknown = set(body) - set(current)
        if unknown:
            raise ApiError(400, f"unknown settings: {sorted(unknown)}; known: {sorted(current)}")
        for name, value in body.items():
            kind = type(current[name])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ApiError(400, f"{name} must be a non-negative number")
            setattr(self.config, name, kind(value))
        if "generation_404_first" in body:
            with self._lock:
                self._gets.clear()  # "the first N GETs" count from now on
        self.config.analytics_max_rows = max(1, self.config.analytics_max_rows)
        self.limiter.per_minute = self.config.analytics_rpm
        self.faults.fault_rate = self.config.fault_rate
        return asdict(self.config)

    def _count(self, path: str, status: int) -> None:
        with self._lock:
            by_status = self._by_path.setdefault(path, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_path = {p: dict(s) for p, s in self._by_path.items()}
        by_status: dict[str, int] = {}
        for statuses in by_path.values():
            for status, n in statuses.items():
                by_status[status] = by_status.get(status, 0) + n
        return {"total": sum(by_status.values()), "by_path": {p: sum(s.values()) for p, s in by_path.items()},
                "by_status": by_status, "by_path_status": by_path}

    def _reset_stats(self) -> Any:
        with self._lock:
            self._by_path.clear()
        return self.stats()


def _control_date(value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, "date must be YYYY-MM-DD") from None


# --- HTTP ----------------------------------------------------------------------------------------


class EmulatorHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive front of `Emulator.handle`; logs no requests, so no key can leak."""

    protocol_version = "HTTP/1.1"
    server_version = "OpenRouterEmulator/1.0"
    disable_nagle_algorithm = True
    emulator: Emulator  # set on the subclass made by `make_server`

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        try:
            if length < 0:
                self.close_connection = True  # the body cannot be skipped, so the connection cannot be reused
                response = Response(400, error_body(400, "Invalid Content-Length header"), {})
            else:
                body = self.rfile.read(length) if length else b""
                response = self.emulator.handle(self.command, self.path, self.headers.get("Authorization"), body)
        except Exception:  # noqa: BLE001 - an emulator bug must still answer in the spec's shape
            traceback.print_exc(file=sys.stderr)
            response = Response(500, error_body(500), {})
        data = json.dumps(response.payload, separators=(",", ":"), allow_nan=False).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        return


def make_server(args: argparse.Namespace) -> ThreadingHTTPServer:
    emulator = Emulator(args)
    handler = type("BoundEmulatorHandler", (EmulatorHandler,), {"emulator": emulator})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    return server


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags; `usage-pipeline emulator` and `python -m ...server` share them."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--seed", type=int, default=7, help="same seed, same generations for a UTC day")
    parser.add_argument("--generations-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=3, help="completed UTC days before today (plus today so far)")
    parser.add_argument("--management-key", default="emulator-management-key")
    parser.add_argument("--inference-key", default="emulator-inference-key")
    parser.add_argument("--analytics-max-rows", type=int, default=MAX_ANALYTICS_ROWS,
                        help="server-side row cap; effective limit = min(requested, this, 10000)")
    parser.add_argument("--analytics-rpm", type=int, default=64, help="analytics requests per key per 60 s; 0: off")
    parser.add_argument("--fresh-404-seconds", type=float, default=5.0,
                        help="GET /generation answers 404 this long after created_at")
    parser.add_argument("--generation-404-first", type=int, default=0, help="first N GETs of each id answer 404")
    parser.add_argument("--late-generations", type=int, default=0,
                        help="extra generations per completed day that appear only after --late-after seconds")
    parser.add_argument("--late-after", type=float, default=30.0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="probability of a random 5xx per request")
    parser.add_argument("--slow-ms", type=int, default=0, help="added latency per /api/v1 request")


def serve_from_args(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    server = make_server(args)
    host, port = server.server_address[:2]
    print(f"OpenRouter emulator listening on http://{host}:{port}{API_PREFIX} "
          f"(seed {args.seed}, {args.generations_per_day} generations/day, {args.days} days)", flush=True)
    stop = threading.Event()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    except ValueError:  # not the main thread: the caller owns signals
        pass
    worker = threading.Thread(target=server.serve_forever, name="emulator-http", daemon=True)
    worker.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        print("OpenRouter emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local emulator of the OpenRouter usage API")
    add_cli_arguments(parser)
    serve_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
