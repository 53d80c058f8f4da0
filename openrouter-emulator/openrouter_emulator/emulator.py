"""The emulator without HTTP: every request in, its response out, on one event loop.

`Emulator.handle` routes `/api/v1` through what the real service does before its origin answers
(account limiter, latency, faults, hangs), then authenticates and calls the endpoint modules; the
numpy-heavy endpoints run in a thread pool so they never stall the loop. `/_emulator` goes to the
control API. Keeping HTTP out (see `server`) lets the whole behaviour be driven by plain calls.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from openrouter_emulator.account import activity, credits_info, key_info
from openrouter_emulator.analytics import run_query
from openrouter_emulator.analytics_catalogue import analytics_meta
from openrouter_emulator.analytics_query import parse_query
from openrouter_emulator.broadcast_live import LiveBroadcast, live_settings
from openrouter_emulator.control import ControlApi
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.destinations import Destinations, route_of
from openrouter_emulator.faults import FaultPlan, SlidingWindowLimiter, error_body
from openrouter_emulator.generation import GenerationEndpoint
from openrouter_emulator.history import History
from openrouter_emulator.hostility import Hostility
from openrouter_emulator.limiters import RequestLimiter, make_limiter
from openrouter_emulator.live_shapes import forbidden_message, missing_key_message
from openrouter_emulator.models import models_list
from openrouter_emulator.organisation import ACCOUNT_OWNER
from openrouter_emulator.protocol import ApiError, Handler, Request, Response, error_response
from openrouter_emulator.runtime_config import RuntimeConfig
from openrouter_emulator.stats import Stats

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_emulator"


class Emulator:
    """All state behind the HTTP server; `handle` is request in, response out, on one event loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.started_at = time.time()
        self.seed: int = args.seed
        self.management_key: str = args.management_key
        self.inference_key: str = args.inference_key
        self.dataset = UsageDataset(seed=args.seed, generations_per_day=args.generations_per_day, days=args.days,
                                    late_generations=args.late_generations,
                                    late_visible_at=self.started_at + args.late_after)
        self.history = History(seed=args.seed, generations_per_day=args.generations_per_day, generation_days=args.days)
        self.config = RuntimeConfig.from_args(args)
        self.faults = FaultPlan(seed=args.seed, fault_rate=self.config.fault_rate,
                                fault_statuses=self.config.fault_statuses)
        self.limiter = SlidingWindowLimiter(self.config.analytics_rpm)
        self.account_limiter: RequestLimiter = make_limiter(self.config.rate_limiter, self.config.rate_limit_rps,
                                                            self.config.rate_limit_window_s)
        self.stats = Stats()
        self.hostility = Hostility(args.seed, self.config, self.stats)
        self.generations = GenerationEndpoint(self.dataset, self.config, seed=args.seed, stats=self.stats)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="emulator-numpy")
        live = live_settings(args, args.seed)  # ValueError naming the flag when they do not fit together
        self.live_broadcast = None if live is None else LiveBroadcast(self.dataset, *live, self.in_pool)
        self.destinations = Destinations(args.seed)
        self.control = ControlApi(self)
        # (method, path) -> (management only, runs in the thread pool, handler)
        self._api_routes: dict[tuple[str, str], tuple[bool, bool, Handler]] = {
            ("GET", "/activity"): (True, True, lambda r, now: activity(self.dataset, r.params, now,
                                                                       self.config.shapes)),
            ("GET", "/analytics/meta"): (True, False, lambda r, now: analytics_meta()),
            ("POST", "/analytics/query"): (True, True, self._analytics_query),
            ("GET", "/credits"): (True, True, lambda r, now: credits_info(self.dataset, now)),
            ("GET", "/generation"): (False, False, self.generations.answer),
            ("GET", "/key"): (False, True, lambda r, now: key_info(self.dataset, r.key or "", r.management, now)),
            ("GET", "/models"): (False, False, lambda r, now: models_list()),
            **{route: (True, False, handler) for route, handler in self.destinations.routes().items()},
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start_background(self) -> None:
        """Start what runs beside the answers (the live Broadcast pusher), in the running loop."""
        if self.live_broadcast is not None:
            self.live_broadcast.start()

    async def stop_background(self) -> None:
        if self.live_broadcast is not None:
            await self.live_broadcast.stop()

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Change runtime settings (all or none; ValueError saying why) and pass them on to what holds a copy."""
        checked = self.config.update(settings)
        if "generation_404_first" in checked or "first_404_share" in checked:
            self.generations.restart_counts()
        self.limiter.per_minute = self.config.analytics_rpm
        self.faults.fault_rate = self.config.fault_rate
        self.faults.fault_statuses = self.config.fault_statuses
        if "rate_limiter" in checked:  # named (even unchanged, as DELETE /config does): a fresh limiter, no history
            self.account_limiter = make_limiter(self.config.rate_limiter, self.config.rate_limit_rps,
                                                self.config.rate_limit_window_s)
        self.account_limiter.rps = self.config.rate_limit_rps  # the running limiter keeps what it has spent
        self.account_limiter.window_s = self.config.rate_limit_window_s

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
                held = _Held()
                response = await self._api(Request(method, sub, params, body), authorization, held)
                self.stats.answered(sub, response.status, held.seconds)
                return response
            finally:
                self.stats.leave()
        return Response(404, error_body(404, "Not Found"), {})

    async def in_pool(self, function: Callable[[], Any]) -> Any:
        """`function()` in the numpy thread pool, so it never stalls the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function)

    async def _control(self, request: Request) -> Response:
        route = self.control.routes.get((request.method, request.path))
        if route is None:
            return Response(404, error_body(404, f"No control endpoint {request.method} {request.path}"), {})
        pooled, handler = route
        try:
            if pooled:
                payload = await self.in_pool(lambda: handler(request, time.time()))
            else:
                payload = handler(request, time.time())
            if inspect.isawaitable(payload):  # a long job (a Broadcast replay) answers when it is done
                payload = await payload
            return Response(200, payload, {})
        except ApiError as error:
            return error_response(error)

    async def _api(self, request: Request, authorization: str | None, held: _Held) -> Response:
        """Account limiter, latency, faults, lone 429s, hangs, then the origin: auth, routes, per-key analytics
        limit. Every deliberate wait goes through `held`, which counts it for the stats' delay log."""
        hostility = self.hostility
        refusal = self.account_limiter.acquire()
        if refusal is not None:  # answered before the origin: a tenth of a latency sample
            await held.sleep(hostility.latency_s() / 10)
            self.stats.rate_limited += 1
            return hostility.rate_limited(refusal, self._user_id(authorization))
        delay_s = hostility.latency_s()
        generation_id = next(iter(request.params.get("id") or []), None)
        fault = self.faults.next_fault(request.path, generation_id)
        if fault is not None:
            await held.sleep(fault.delay_ms / 1000)
            if fault.status is not None:
                self.stats.random_faults += fault.drawn
                await held.sleep(delay_s)
                # a scripted missing record says what the origin's own 404 says (real-payloads/errors/01)
                message = (f"Generation {generation_id} not found"
                           if fault.status == 404 and request.path == "/generation" and generation_id else None)
                return hostility.error_page_or(error_response(ApiError(fault.status, message, fault.retry_after)))
        if hostility.throttles(request):  # refused in front of the origin, like the limiter
            await held.sleep(delay_s / 10)
            return hostility.throttled(self._user_id(authorization))
        config = self.config
        if hostility.hangs(request):
            self.stats.hangs += 1
            await held.sleep(config.hang_seconds)  # a client that gave up has been dropped by now
        response = await self._origin(request, authorization)
        if request.path == "/analytics/query" and response.status == 200 and config.analytics_ms_per_1k_rows > 0:
            rows = response.payload["data"]["metadata"]["row_count"]
            delay_s += config.analytics_ms_per_1k_rows * rows / 1000 / 1000
        await held.sleep(delay_s)
        return response

    async def _origin(self, request: Request, authorization: str | None) -> Response:
        route = self._api_routes.get((request.method, route_of(request.path)))
        if route is None:
            return Response(404, error_body(404, "Not Found"), {})
        management_only, pooled, handler = route
        try:
            key, management = self._authenticate(authorization)
            if management_only and not management:
                raise ApiError(403, forbidden_message(request.path, self.config.shapes))
            if request.path.startswith("/analytics/"):
                wait = self.limiter.acquire(hashlib.sha256(key.encode()).hexdigest())
                if wait is not None:
                    raise ApiError(429, "Rate limit exceeded", retry_after=wait)
            authed = Request(request.method, request.path, request.params, request.body, key, management)
            if request.path == "/generation":
                pooled = self.generations.needs_pool(authed)
            if pooled:
                payload = await self.in_pool(lambda: handler(authed, time.time()))
            else:
                payload = handler(authed, time.time())
            return payload if isinstance(payload, Response) else Response(200, payload, {})  # a 201 is a Response
        except ApiError as error:
            return error_response(error)

    def _user_id(self, authorization: str | None) -> str | None:
        """The account owner's id that live 429 bodies carry beside `error`, when the request names a known key."""
        key = (authorization or "").partition(" ")[2].strip()
        return ACCOUNT_OWNER.clerk_id if key in (self.management_key, self.inference_key) else None

    def _authenticate(self, authorization: str | None) -> tuple[str, bool]:
        """(key, is management key); the key itself never appears in any message or log."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, missing_key_message(self.config.shapes))
        if key == self.management_key:
            return key, True
        if key == self.inference_key:
            return key, False
        raise ApiError(401, "User not found.")

    def _analytics_query(self, request: Request, now: float) -> Any:
        config = self.config
        return run_query(self.dataset, parse_query(request.json(), now), now, config.analytics_max_rows,
                         labels=config.analytics_labels, inclusive_end=config.inclusive_end,
                         history=self.history, history_days=config.history_days)


class _Held:
    """The seconds one `/api/v1` answer was deliberately held: every wait of `_api` sleeps through here, so the
    delay the stats record is the one slept."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.seconds += seconds
            await asyncio.sleep(seconds)
