"""A local HTTP emulator of the OpenRouter usage API (`/api/v1`), faithful to the official spec and as hostile.

OpenRouter cannot be reached from here, so clients are tested against this server: same paths, same
auth rules, same response shapes and error bodies, the same lack of a generation listing; plus what the
real service does to a client under load (latency with a long tail, hangs, an account-wide rate limit,
a CDN's HTML error pages, label-named analytics), each switchable by a CLI flag and at runtime through
the `/_emulator` control API, which also tells tests the ground truth.

The HTTP front is `aiohttp` (keep-alive, a 4,096 backlog, no access log so no key can leak): one event
loop holds thousands of connections, latency is `asyncio.sleep`, and the numpy-heavy endpoints run in a
thread pool so they never stall the loop. `Emulator.handle` is the whole request -> response logic
without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from openrouter_emulator.account import activity, credits_info, key_info
from openrouter_emulator.analytics import MAX_ANALYTICS_ROWS, run_query
from openrouter_emulator.analytics_catalogue import analytics_meta
from openrouter_emulator.analytics_query import parse_query
from openrouter_emulator.dataset import US_PER_SECOND, UTC, UsageDataset, generation_record, parse_generation_id
from openrouter_emulator.faults import (
    AccountLimiter,
    FaultPlan,
    FaultRule,
    Refusal,
    SlidingWindowLimiter,
    cdn_error_page,
    error_body,
)
from openrouter_emulator.history import MAX_HISTORY_DAYS, History
from openrouter_emulator.isotime import parse_iso8601, to_epoch_us
from openrouter_emulator.models import models_list
from openrouter_emulator.protocol import ApiError, Request, Response, error_response, query_param

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_emulator"
BACKLOG = 4096
HTML_CONTENT_TYPE = "text/html; charset=UTF-8"


# --- Runtime settings --------------------------------------------------------------------------------


@dataclass(slots=True)
class RuntimeConfig:
    """The knobs tests may turn while the emulator runs (`GET`/`POST`/`DELETE /_emulator/config`).

    Every field is also a CLI flag (see `add_cli_arguments`); booleans take JSON true/false, the rest
    non-negative numbers (shares at most 1).
    """

    analytics_max_rows: int = MAX_ANALYTICS_ROWS
    analytics_rpm: int = 64
    fresh_404_seconds: float = 5.0
    generation_404_first: int = 0
    fault_rate: float = 0.0
    latency_median_ms: float = 0.0
    latency_sigma: float = 0.6
    analytics_ms_per_1k_rows: float = 0.0
    hang_share: float = 0.0
    hang_seconds: float = 60.0
    rate_limit_rps: float = 0.0
    rate_limit_window_s: float = 1.0
    retry_after_share: float = 0.5
    html_error_share: float = 0.0
    analytics_labels: bool = True
    inclusive_end: bool = False
    history_days: int = MAX_HISTORY_DAYS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RuntimeConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


SHARE_SETTINGS = frozenset({"fault_rate", "hang_share", "retry_after_share", "html_error_share"})
POSITIVE_SETTINGS = frozenset({"rate_limit_window_s"})
MAXIMUM_SETTINGS = {"history_days": MAX_HISTORY_DAYS}


def _check_setting(name: str, value: Any, kind: type) -> Any:
    """The value converted to the setting's type, or ValueError saying what the setting accepts."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if name in SHARE_SETTINGS and value > 1:
        raise ValueError(f"{name} must be a share from 0 to 1")
    if name in POSITIVE_SETTINGS and value <= 0:
        raise ValueError(f"{name} must be positive")
    if name in MAXIMUM_SETTINGS and value > MAXIMUM_SETTINGS[name]:
        raise ValueError(f"{name} must be at most {MAXIMUM_SETTINGS[name]}")
    return kind(value)


# --- Counters ----------------------------------------------------------------------------------------


class Stats:
    """Counters of the `/api/v1` answers since start or the last reset; only the event loop touches them."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.by_path: dict[str, dict[str, int]] = {}
        self.rate_limited = self.html_errors = self.hangs = 0
        self.max_in_flight = self.in_flight
        self._bucket = 0  # whole seconds since `started` of the bucket being counted
        self._bucket_count = 0
        self._peak = 0

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def answered(self, path: str, status: int) -> None:
        by_status = self.by_path.setdefault(path, {})
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1
        bucket = int(time.monotonic() - self.started)
        if bucket != self._bucket:
            self._peak = max(self._peak, self._bucket_count)
            self._bucket, self._bucket_count = bucket, 0
        self._bucket_count += 1

    def snapshot(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        peak = self._peak
        if self._bucket < int(elapsed):  # the bucket last counted into has ended: it is whole
            peak = max(peak, self._bucket_count)
        by_path = {p: dict(s) for p, s in self.by_path.items()}
        by_status: dict[str, int] = {}
        for statuses in by_path.values():
            for status, n in statuses.items():
                by_status[status] = by_status.get(status, 0) + n
        total = sum(by_status.values())
        ok = sum(n for status, n in by_status.items() if status.startswith("2"))

        def per_second(n: int) -> float:
            return round(n / elapsed, 3) if elapsed > 0 else 0.0

        return {
            "total": total, "by_path": {p: sum(s.values()) for p, s in by_path.items()}, "by_status": by_status,
            "by_path_status": by_path, "elapsed_s": round(elapsed, 3), "served_per_second": per_second(total),
            "ok_per_second": per_second(ok), "peak_served_per_second": peak, "rate_limited": self.rate_limited,
            "html_errors": self.html_errors, "hangs": self.hangs, "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


# --- The emulator: routing, auth, hostility, control API -----------------------------------------------

Handler = Callable[[Request, float], Any]


class Emulator:
    """All state behind the HTTP server; `handle` is request in, response out, on one event loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.started_at = time.time()
        self.management_key: str = args.management_key
        self.inference_key: str = args.inference_key
        self.dataset = UsageDataset(seed=args.seed, generations_per_day=args.generations_per_day, days=args.days,
                                    late_generations=args.late_generations,
                                    late_visible_at=self.started_at + args.late_after)
        self.history = History(seed=args.seed, generations_per_day=args.generations_per_day, generation_days=args.days)
        self.config = RuntimeConfig.from_args(args)
        self._initial_config = replace(self.config)
        self.faults = FaultPlan(seed=args.seed, fault_rate=self.config.fault_rate)
        self.limiter = SlidingWindowLimiter(self.config.analytics_rpm)
        self.account_limiter = AccountLimiter(self.config.rate_limit_rps, self.config.rate_limit_window_s)
        self.stats = Stats()
        # One seeded stream per kind of chance, so switching one knob never shifts another's draws.
        self._random = {name: random.Random(f"{args.seed}:{name}")
                        for name in ("latency", "hang", "retry_after", "html", "ray")}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="emulator-numpy")
        self._gets: dict[str, int] = {}
        self._gets_lock = threading.Lock()  # `_generation` runs in the pool when its day is not built yet
        self._overrides: dict[str, dict[str, Any]] = {}  # generation id -> fields answered instead
        # (method, path) -> (management only, runs in the thread pool, handler)
        self._api_routes: dict[tuple[str, str], tuple[bool, bool, Handler]] = {
            ("GET", "/activity"): (True, True, lambda r, now: activity(self.dataset, r.params, now)),
            ("GET", "/analytics/meta"): (True, False, lambda r, now: analytics_meta()),
            ("POST", "/analytics/query"): (True, True, self._analytics_query),
            ("GET", "/credits"): (True, True, lambda r, now: credits_info(self.dataset, now)),
            ("GET", "/generation"): (False, False, self._generation),
            ("GET", "/key"): (False, True, lambda r, now: key_info(self.dataset, r.key or "", r.management, now)),
            ("GET", "/models"): (False, False, lambda r, now: models_list()),
        }
        # (method, path) -> (runs in the thread pool, handler)
        self._control_routes: dict[tuple[str, str], tuple[bool, Handler]] = {
            ("GET", "/truth"): (True, self._truth),
            ("GET", "/faults"): (False, lambda r, now: {"rules": self.faults.rules()}),
            ("POST", "/faults"): (False, self._set_faults),
            ("DELETE", "/faults"): (False, lambda r, now: self._clear_faults()),
            ("GET", "/stats"): (False, lambda r, now: self.stats.snapshot()),
            ("DELETE", "/stats"): (False, lambda r, now: self._reset_stats()),
            ("POST", "/generations"): (True, self._add_generations),
            ("POST", "/records"): (False, self._override_records),
            ("DELETE", "/records"): (False, lambda r, now: self._clear_overrides()),
            ("GET", "/config"): (False, lambda r, now: asdict(self.config)),
            ("POST", "/config"): (False, self._set_config),
            ("DELETE", "/config"): (False, lambda r, now: self._apply_config(asdict(self._initial_config))),
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- dispatch --

    async def handle(self, method: str, path: str, params: dict[str, list[str]], authorization: str | None,
                     body: bytes) -> Response:
        path = path.rstrip("/") or "/"
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return await self._control(Request(method, path[len(CONTROL_PREFIX):] or "/", params, body))
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            sub = path[len(API_PREFIX):] or "/"
            self.stats.enter()
            try:
                response = await self._api(Request(method, sub, params, body), authorization)
                self.stats.answered(sub, response.status)
                return response
            finally:
                self.stats.leave()
        return Response(404, error_body(404, "Not Found"), {})

    async def _in_pool(self, function: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function)

    async def _control(self, request: Request) -> Response:
        route = self._control_routes.get((request.method, request.path))
        if route is None:
            return Response(404, error_body(404, f"No control endpoint {request.method} {request.path}"), {})
        pooled, handler = route
        try:
            if pooled:
                payload = await self._in_pool(lambda: handler(request, time.time()))
            else:
                payload = handler(request, time.time())
            return Response(200, payload, {})
        except ApiError as error:
            return error_response(error)

    async def _api(self, request: Request, authorization: str | None) -> Response:
        """Account limiter, latency, faults, hangs, then the origin: auth, routes, per-key analytics limit."""
        refusal = self.account_limiter.acquire()
        if refusal is not None:  # answered before the origin: a tenth of a latency sample
            await _sleep(self._latency_s() / 10)
            self.stats.rate_limited += 1
            return self._rate_limited(refusal)
        delay_s = self._latency_s()
        fault = self.faults.next_fault(request.path)
        if fault is not None:
            await _sleep(fault.delay_ms / 1000)
            if fault.status is not None:
                await _sleep(delay_s)
                return self._error_page_or(error_response(ApiError(fault.status, retry_after=fault.retry_after)))
        config = self.config
        if (request.method == "GET" and request.path == "/generation" and config.hang_share > 0
                and self._random["hang"].random() < config.hang_share):
            self.stats.hangs += 1
            await asyncio.sleep(config.hang_seconds)  # a client that gave up has been dropped by now
        response = await self._origin(request, authorization)
        if request.path == "/analytics/query" and response.status == 200 and config.analytics_ms_per_1k_rows > 0:
            rows = response.payload["data"]["metadata"]["row_count"]
            delay_s += config.analytics_ms_per_1k_rows * rows / 1000 / 1000
        await _sleep(delay_s)
        return response

    async def _origin(self, request: Request, authorization: str | None) -> Response:
        route = self._api_routes.get((request.method, request.path))
        if route is None:
            return Response(404, error_body(404, "Not Found"), {})
        management_only, pooled, handler = route
        try:
            key, management = self._authenticate(authorization)
            if management_only and not management:
                raise ApiError(403, "Only management keys can perform this operation")
            if request.path.startswith("/analytics/"):
                wait = self.limiter.acquire(hashlib.sha256(key.encode()).hexdigest())
                if wait is not None:
                    raise ApiError(429, "Rate limit exceeded", retry_after=wait)
            authed = Request(request.method, request.path, request.params, request.body, key, management)
            if request.path == "/generation":
                pooled = self._generation_needs_pool(authed)
            if pooled:
                payload = await self._in_pool(lambda: handler(authed, time.time()))
            else:
                payload = handler(authed, time.time())
            return Response(200, payload, {})
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

    # -- hostility --

    def _latency_s(self) -> float:
        """One lognormal latency sample (seconds) with the configured median and sigma; 0 when off."""
        median = self.config.latency_median_ms
        if median <= 0:
            return 0.0
        sigma = self.config.latency_sigma
        sample = median if sigma <= 0 else median * math.exp(sigma * self._random["latency"].gauss(0.0, 1.0))
        return sample / 1000

    def _chance(self, stream: str, share: float) -> bool:
        return share > 0 and (share >= 1 or self._random[stream].random() < share)

    def _rate_limited(self, refusal: Refusal) -> Response:
        if self._chance("html", self.config.html_error_share):
            return self._cdn_page(429, refusal.retry_after_s)
        headers = {"X-RateLimit-Limit": str(refusal.budget), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(refusal.reset_epoch_ms)}
        if self._chance("retry_after", self.config.retry_after_share):
            headers["Retry-After"] = str(refusal.retry_after_s)
        return Response(429, error_body(429, "Rate limit exceeded"), headers)

    def _error_page_or(self, response: Response) -> Response:
        """A 429 or 5xx from a fault becomes a CDN's HTML page for `html_error_share` of them."""
        if (response.status == 429 or response.status >= 500) and self._chance("html", self.config.html_error_share):
            retry_after = response.headers.get("Retry-After")
            return self._cdn_page(response.status, int(retry_after) if retry_after else 1)
        return response

    def _cdn_page(self, status: int, retry_after_s: int) -> Response:
        self.stats.html_errors += 1
        ray = f"{self._random['ray'].getrandbits(64):016x}-FRA"
        headers = {"Server": "cloudflare", "CF-RAY": ray, "Cache-Control": "private, max-age=0, no-store"}
        if self._chance("retry_after", self.config.retry_after_share):
            headers["Retry-After"] = str(max(1, retry_after_s))
        return Response(status, None, headers, raw=cdn_error_page(status, ray), content_type=HTML_CONTENT_TYPE)

    # -- /generation and /analytics/query --

    def _generation_needs_pool(self, request: Request) -> bool:
        """Only the first request of a day builds it (numpy, maybe seconds): that one runs in the pool."""
        parsed = parse_generation_id(query_param(request.params, "id") or "")
        if parsed is None:
            return False
        date = dt.datetime.fromtimestamp(parsed[0], UTC).date()
        return self.dataset.built_day(date) is None and self.dataset.covers(date, time.time())

    def _generation(self, request: Request, now: float) -> Any:
        gen_id = query_param(request.params, "id")
        if not gen_id:
            raise ApiError(400, "Missing required query parameter: id")
        first_404 = self.config.generation_404_first
        if first_404 > 0:
            with self._gets_lock:
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
        record = generation_record(day, row)
        record.update(self._overrides.get(gen_id, {}))
        return {"data": record}

    def _override_records(self, request: Request, now: float) -> Any:
        """Hostile records: `{"overrides": {"<id>": {"<field>": <any JSON value>}}}` makes GET /generation
        answer those values for those fields (NaN and Infinity included), to test what the client keeps."""
        body = request.json()
        overrides = body.get("overrides") if isinstance(body, dict) else None
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ApiError(400, 'body must be {"overrides": {"<generation id>": {"<field>": value, ...}}}')
        for gen_id, values in overrides.items():
            self._overrides.setdefault(str(gen_id), {}).update(values)
        return {"records": len(self._overrides)}

    def _clear_overrides(self) -> Any:
        self._overrides.clear()
        return {"records": 0}

    def _analytics_query(self, request: Request, now: float) -> Any:
        config = self.config
        return run_query(self.dataset, parse_query(request.json(), now), now, config.analytics_max_rows,
                         labels=config.analytics_labels, inclusive_end=config.inclusive_end,
                         history=self.history, history_days=config.history_days)

    # -- control --

    def _truth(self, request: Request, now: float) -> Any:
        """A generation day's truth, or an aggregate-only day's figures (`aggregate_only`, no ids)."""
        date = _control_date(query_param(request.params, "date"))
        truth = {"aggregate_only": False, **self.dataset.truth(date, now)}
        if self.history.covers(date, now, self.config.history_days):
            truth.update(self.history.truth(date))
        return truth

    def _set_faults(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            raise ApiError(400, 'body must be {"rules": [...], "append"?: bool}')
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
            at_us = None if at is None else to_epoch_us(parse_iso8601(str(at)))
            ids = self.dataset.add_generations(date, count, now, at_us)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {"date": date.isoformat(), "count": len(ids), "ids": ids}

    def _set_config(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object of settings")
        return self._apply_config(body)

    def _apply_config(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        kinds = {f.name: type(getattr(self.config, f.name)) for f in fields(RuntimeConfig)}
        unknown = set(settings) - set(kinds)
        if unknown:
            raise ApiError(400, f"unknown settings: {sorted(unknown)}; known: {sorted(kinds)}")
        try:
            checked = {name: _check_setting(name, value, kinds[name]) for name, value in settings.items()}
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        for name, value in checked.items():  # all or nothing: set only once every value is valid
            setattr(self.config, name, value)
        if "generation_404_first" in checked:
            with self._gets_lock:
                self._gets.clear()  # "the first N GETs" count from now on
        self.config.analytics_max_rows = max(1, self.config.analytics_max_rows)
        self.limiter.per_minute = self.config.analytics_rpm
        self.faults.fault_rate = self.config.fault_rate
        self.account_limiter.rps = self.config.rate_limit_rps
        self.account_limiter.window_s = self.config.rate_limit_window_s
        return asdict(self.config)

    def _reset_stats(self) -> Any:
        self.stats.reset()
        return self.stats.snapshot()


def _control_date(value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, "date must be YYYY-MM-DD") from None


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


# --- HTTP ----------------------------------------------------------------------------------------


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
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread: the caller owns signals
                pass
        await stop.wait()
    finally:
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


# --- CLI ---------------------------------------------------------------------------------------------


def _number(kind: type, *, share: bool = False, positive: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not math.isfinite(value) or value < 0 or (share and value > 1) or (positive and value <= 0):
            what = "a share from 0 to 1" if share else "a positive number" if positive else "a non-negative number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


def _history_days(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_HISTORY_DAYS}, got {text!r}")
    return value


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"must be on or off, got {text!r}")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags; `openrouter-emulator`, `python -m openrouter_emulator` and `usage-pipeline
    emulator` share them. Each hostile behaviour is also a runtime key of `POST /_emulator/config` (named in
    brackets)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--seed", type=int, default=7,
                        help="same seed, same generations for a UTC day, and the same latency/hang/fault draws "
                             "for the same order of requests")
    parser.add_argument("--generations-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=3, help="completed UTC days before today (plus today so far)")
    parser.add_argument("--history-days", dest="history_days", metavar="N", type=_history_days,
                        default=MAX_HISTORY_DAYS,
                        help="aggregate-only days up to N days back (at most 365; 0: none): the days older than "
                             "both --days and the 31-day generation window carry per-day analytics cells (model x "
                             "API key) and no generations [history_days]")
    parser.add_argument("--management-key", default="emulator-management-key")
    parser.add_argument("--inference-key", default="emulator-inference-key")
    parser.add_argument("--late-generations", type=int, default=0,
                        help="extra generations per completed day that appear only after --late-after seconds")
    parser.add_argument("--late-after", type=float, default=30.0)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop: uvloop when it imports (auto), or the stdlib's")
    g = parser.add_argument_group("API behaviour (runtime keys of POST /_emulator/config in brackets)")
    g.add_argument("--analytics-max-rows", dest="analytics_max_rows", metavar="ROWS", type=_number(int),
                   default=MAX_ANALYTICS_ROWS,
                   help="server-side row cap; effective limit = min(requested, this, 10000) [analytics_max_rows]")
    g.add_argument("--analytics-rpm", dest="analytics_rpm", metavar="N", type=_number(int), default=64,
                   help="analytics requests per key per 60 s, sliding window; 0: off [analytics_rpm]")
    g.add_argument("--fresh-404-seconds", dest="fresh_404_seconds", metavar="S", type=_number(float), default=5.0,
                   help="GET /generation answers 404 this long after created_at [fresh_404_seconds]")
    g.add_argument("--generation-404-first", dest="generation_404_first", metavar="N", type=_number(int), default=0,
                   help="first N GETs of each id answer 404 [generation_404_first]")
    g.add_argument("--fault-rate", dest="fault_rate", metavar="SHARE", type=_number(float, share=True), default=0.0,
                   help="probability of a random 500/502/503/524/529 per /api/v1 request [fault_rate]")
    g.add_argument("--analytics-labels", dest="analytics_labels", type=_on_off, default=True, metavar="{on,off}",
                   help="on (default, as OpenRouter): analytics rows name model, api_key_id, app, user and "
                        "workspace by human-readable label (model 'OpenAI: GPT-4.1', never the /generation slug); "
                        "off: by underlying id (model permaslug, key hash). Filters always take ids "
                        "[analytics_labels]")
    g.add_argument("--inclusive-end", dest="inclusive_end", type=_on_off, default=False, metavar="{on,off}",
                   help="on: analytics time_range.end is inclusive (created_at <= end); off (default): "
                        "[start, end) [inclusive_end]")
    h = parser.add_argument_group("Hostile traffic behaviour (off by default)")
    h.add_argument("--latency-ms", dest="latency_median_ms", metavar="MS", type=_number(float), default=0.0,
                   help="median of a lognormal delay of every /api/v1 answer, ms; 0: none [latency_median_ms]")
    h.add_argument("--latency-sigma", dest="latency_sigma", metavar="SIGMA", type=_number(float), default=0.6,
                   help="sigma of that lognormal (0: constant; 0.6: p95 ~2.7x the median) [latency_sigma]")
    h.add_argument("--analytics-ms-per-1k-rows", dest="analytics_ms_per_1k_rows", metavar="MS", type=_number(float),
                   default=0.0,
                   help="extra delay of an analytics answer per 1,000 rows it returns [analytics_ms_per_1k_rows]")
    h.add_argument("--hang-share", dest="hang_share", metavar="SHARE", type=_number(float, share=True), default=0.0,
                   help="share of GET /generation answers that first hang --hang-seconds [hang_share]")
    h.add_argument("--hang-seconds", dest="hang_seconds", metavar="S", type=_number(float), default=60.0,
                   help="how long a hanging answer waits (a disconnecting client is dropped) [hang_seconds]")
    h.add_argument("--rate-limit", dest="rate_limit_rps", metavar="RPS", type=_number(float), default=0.0,
                   help="account-wide requests/s over all /api/v1 paths and keys, fixed windows; over it 429 "
                        "with X-RateLimit-* headers; 0: off [rate_limit_rps]")
    h.add_argument("--rate-limit-window", dest="rate_limit_window_s", metavar="S", type=_number(float, positive=True),
                   default=1.0, help="window of that limit, s, aligned to the epoch; budget = "
                                     "round(rate x window), at least 1 [rate_limit_window_s]")
    h.add_argument("--retry-after-share", dest="retry_after_share", metavar="SHARE", type=_number(float, share=True),
                   default=0.5,
                   help="share of rate-limit 429s (and CDN pages) that carry Retry-After [retry_after_share]")
    h.add_argument("--html-error-share", dest="html_error_share", metavar="SHARE", type=_number(float, share=True),
                   default=0.0,
                   help="share of 429 (account limiter) and 5xx (faults) answers sent as a CDN's HTML error page "
                        "instead of JSON [html_error_share]")


def serve_from_args(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    raise_open_files_limit()
    _run(serve_async(args), getattr(args, "loop", "auto"))


CONTROL_HELP = """control API (tests switch behaviour at runtime, no restart):
  GET|POST|DELETE /_emulator/config   every key in brackets above; POST {"key": value, ...}; DELETE restores
  GET /_emulator/truth?date=D         the day's ground truth (count, ids, per model and key, the catalogue);
                                      for an aggregate-only history day its figures (aggregate_only, no ids)
  GET|POST|DELETE /_emulator/faults   scripted faults {"rules": [{"path", "status", "count", ...}]}
  POST /_emulator/generations         late generations {"date", "count", "at"?}
  GET|DELETE /_emulator/stats         answers per path/status, rates, peak, 429s, HTML pages, hangs, in flight
All chance (latency, hangs, Retry-After, HTML pages, faults) is drawn from --seed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openrouter-emulator",
                                     description="Local, hostile emulator of the OpenRouter usage API",
                                     epilog=CONTROL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    serve_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
