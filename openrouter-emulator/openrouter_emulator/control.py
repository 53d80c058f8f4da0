"""The `/_emulator` control API: what tests ask of the emulator that OpenRouter would never tell them.

The ground truth of a day, scripted faults, late generations, hostile records, the counters (and the delay
each answer was held) and the runtime settings, switched while the server runs so one process serves a whole
test module; and Broadcast: a day's deliveries pushed on demand (`POST /broadcast`, answered when done), the
live pusher's counts, and the destinations as stored (header values unmasked).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from typing import Any, Protocol

from openrouter_emulator.broadcast import replay_day
from openrouter_emulator.broadcast_live import LiveBroadcast
from openrouter_emulator.broadcast_settings import check_headers, check_settings, check_url
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.destinations import Destinations
from openrouter_emulator.faults import FaultPlan, FaultRule
from openrouter_emulator.generation import GenerationEndpoint
from openrouter_emulator.history import History
from openrouter_emulator.isotime import parse_iso8601, to_epoch_us
from openrouter_emulator.protocol import ApiError, Handler, Request, query_param
from openrouter_emulator.runtime_config import RuntimeConfig
from openrouter_emulator.stats import Stats


class EmulatorState(Protocol):
    """What the control API reads and changes: the parts of `emulator.Emulator` (named here, not imported,
    so the emulator can build its control API without an import circle)."""

    config: RuntimeConfig
    dataset: UsageDataset
    history: History
    faults: FaultPlan
    stats: Stats
    generations: GenerationEndpoint
    seed: int
    live_broadcast: LiveBroadcast | None
    destinations: Destinations

    def configure(self, settings: Mapping[str, Any]) -> None: ...

    def in_pool(self, function: Callable[[], Any]) -> Awaitable[Any]: ...


class ControlApi:
    """The control endpoints over one emulator's state; `routes` maps (method, path) to (pooled, handler)."""

    def __init__(self, emulator: EmulatorState) -> None:
        self._emulator = emulator
        self._initial_config = replace(emulator.config)  # what DELETE /config restores: the flags' values
        generations = emulator.generations
        # (method, path) -> (runs in the thread pool, handler)
        self.routes: dict[tuple[str, str], tuple[bool, Handler]] = {
            ("GET", "/truth"): (True, self._truth),
            ("GET", "/faults"): (False, lambda r, now: {"rules": emulator.faults.rules()}),
            ("POST", "/faults"): (False, self._set_faults),
            ("DELETE", "/faults"): (False, lambda r, now: self._clear_faults()),
            ("GET", "/stats"): (False, lambda r, now: emulator.stats.snapshot()),
            ("DELETE", "/stats"): (False, lambda r, now: self._reset_stats()),
            ("GET", "/delays"): (False, lambda r, now: emulator.stats.delays()),
            ("POST", "/generations"): (True, self._add_generations),
            ("POST", "/records"): (False, generations.override_records),
            ("DELETE", "/records"): (False, lambda r, now: generations.clear_overrides()),
            ("GET", "/config"): (False, lambda r, now: asdict(emulator.config)),
            ("POST", "/config"): (False, self._set_config),
            ("DELETE", "/config"): (False, lambda r, now: self._apply_config(asdict(self._initial_config))),
            ("POST", "/broadcast"): (False, self._broadcast_day),
            ("GET", "/broadcast"): (False, lambda r, now: self._live_broadcast()),
            ("GET", "/destinations"): (False, lambda r, now: {"data": emulator.destinations.stored()}),
        }

    def _truth(self, request: Request, now: float) -> Any:
        """A generation day's truth, or an aggregate-only day's figures (`aggregate_only`, no ids)."""
        emulator = self._emulator
        date = _control_date(query_param(request.params, "date"))
        truth = {"aggregate_only": False, **emulator.dataset.truth(date, now)}
        if emulator.history.covers(date, now, emulator.config.history_days):
            truth.update(emulator.history.truth(date))
        return truth

    def _set_faults(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            raise ApiError(400, 'body must be {"rules": [...], "append"?: bool}')
        try:
            rules = [FaultRule.from_json(r) for r in body["rules"]]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ApiError(400, f"bad fault rule: {exc}") from None
        faults = self._emulator.faults
        if body.get("append"):
            faults.add_rules(rules)
        else:
            faults.replace_rules(rules)
        return {"rules": faults.rules()}

    def _clear_faults(self) -> Any:
        self._emulator.faults.replace_rules([])
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
            ids = self._emulator.dataset.add_generations(date, count, now, at_us)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {"date": date.isoformat(), "count": len(ids), "ids": ids}

    def _set_config(self, request: Request, now: float) -> Any:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object of settings")
        return self._apply_config(body)

    def _apply_config(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        try:
            self._emulator.configure(settings)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return asdict(self._emulator.config)

    async def _broadcast_day(self, request: Request, now: float) -> Any:
        """Push one day's deliveries to `url`; answered with the counts once all are delivered, failed or dropped."""
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, 'body must be {"day": "YYYY-MM-DD", "url": "http://...", "headers"?: {...}, '
                                '"limit"?: n, "connection_test"?: bool, and settings such as "drop_share"}')
        emulator = self._emulator
        try:
            date = dt.date.fromisoformat(str(body.get("day")))
        except ValueError:
            raise ApiError(400, "day must be YYYY-MM-DD") from None
        if not emulator.dataset.covers(date, now):
            first = emulator.dataset.dates(now)[0]
            raise ApiError(400, f"day {date} is outside the emulated days ({first} to today)")
        limit = body.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ApiError(400, "limit must be a positive integer")
        connection_test = body.get("connection_test", False)
        if not isinstance(connection_test, bool):
            raise ApiError(400, "connection_test must be true or false")
        settings = {k: v for k, v in body.items() if k not in ("day", "url", "headers", "limit", "connection_test")}
        try:
            url = check_url(body.get("url"))
            headers = check_headers(body.get("headers") or {})
            checked = check_settings(settings, seed=emulator.seed)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return await replay_day(emulator.dataset, date, now, url, headers, checked, emulator.in_pool, limit=limit,
                                send_connection_test=connection_test)

    def _live_broadcast(self) -> Any:
        live = self._emulator.live_broadcast
        return {"live": False} if live is None else live.snapshot()

    def _reset_stats(self) -> Any:
        stats = self._emulator.stats
        stats.reset()
        return stats.snapshot()


def _control_date(value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, "date must be YYYY-MM-DD") from None
