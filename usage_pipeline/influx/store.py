"""The ledger's InfluxDB store, the one object plain callers use, over the 1.x-compatible HTTP API that 1.x
serves natively and 2.x/3.x through a DBRP mapping: one client for all three. It ties one connection to the
modules that do the work: `upserts` (the write path, shared with the capture), `reads`, `database_setup`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd

from usage_pipeline.influx import database_setup, influxql, reads
from usage_pipeline.influx.connection import InfluxConnection
from usage_pipeline.influx.influxql import quote_ident
from usage_pipeline.influx.points import microseconds_since_epoch
from usage_pipeline.influx.ranks import StoredPoint
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.server import InfluxServer
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.upserts import WRITE_BATCH_SIZE, LedgerDatabase, Upserted
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.generation import Generation


class InfluxStore(AbstractContextManager["InfluxStore"]):
    """The `generations` ledger in one database, through the 1.x-compatible HTTP API."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._connection = InfluxConnection(settings)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._connection.close()

    # ---- server -------------------------------------------------------------------------------

    def ping(self) -> str:
        """The server version (X-Influxdb-Version), proving it is up and speaks the 1.x API."""
        return self._connection.ping()

    def server(self) -> InfluxServer:
        """The server's version and build: what it can do (`server.InfluxServer`)."""
        return self._connection.server()

    def ensure_database(self, databases: Sequence[str] = ()) -> InfluxServer:
        """Make the database ready to write (1.x: create it and its retention; 2.x/3.x: verify it), refusing
        in one line what the server cannot hold; `databases`: all the organisations' on this server."""
        return database_setup.ensure_database(self._connection, databases)

    # ---- writes -------------------------------------------------------------------------------

    def write_generations(self, generations: Sequence[Generation], batch_size: int = WRITE_BATCH_SIZE) -> Upserted:
        """Upsert generations as a capture does (`upserts.LedgerDatabase.upsert`, over the points stored in
        their time range): what was written, and what was refused by id."""
        return asyncio.run(_upsert(self.settings, generations, batch_size))

    def write_lines(self, lines: Sequence[str]) -> None:
        """POST line protocol (ns precision) as one request; raise InfluxWriteError unless 2xx."""
        asyncio.run(_write_lines(self.settings, lines))

    def delete_point(self, model: str, provider: str | pd.api.typing.NAType | None, time_ns: int) -> None:
        """Delete the one point with this identity (1.x only); a provider that is not a non-empty str (None, or
        a frame's <NA>) is the absent tag."""
        self.query(influxql.delete_point(model, provider if isinstance(provider, str) else None, time_ns))

    # ---- queries ------------------------------------------------------------------------------

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the first statement's series (empty when it has none)."""
        return self._connection.query(influxql)

    def day_counts(self, day: dt.date) -> DayCounts:
        """Points and distinct generation ids in the UTC day."""
        return reads.day_counts(self._connection, day)

    def ids_by_model(self, day: dt.date) -> dict[str, int]:
        """Distinct generation ids per model in the UTC day."""
        return reads.per_model(self._connection, f"COUNT(DISTINCT({quote_ident('generation_id')}))", day, int)

    def cost_by_model(self, day: dt.date) -> dict[str, float]:
        """SUM(total_cost) per model in the UTC day."""
        return reads.per_model(self._connection, f"SUM({quote_ident('total_cost')})", day, float)

    def usage_by_model(self, day: dt.date) -> dict[str, float]:
        """SUM(usage) per model in the UTC day (credits charged, which OpenRouter's analytics report)."""
        return reads.per_model(self._connection, f"SUM({quote_ident('usage')})", day, float)

    def stored(self, start_ns: int, end_ns: int) -> list[StoredPoint]:
        """Every point with time in [start_ns, end_ns): generation id, tags, time, and its api_key field."""
        return reads.stored(self._connection, start_ns, end_ns)

    def day_ids(self, day: dt.date) -> set[str]:
        """The generation ids stored in the UTC day."""
        start, end = day_bounds(day)
        return {point.generation_id for point in self.stored(int(start.timestamp()) * 10**9,
                                                             int(end.timestamp()) * 10**9)}

    def duplicated_ids(self, day: dt.date) -> dict[str, int]:
        """Generation ids stored at more than one point in the UTC day -> how many points each has."""
        start, end = day_bounds(day)
        held = Counter(point.generation_id for point in self.stored(int(start.timestamp()) * 10**9,
                                                                     int(end.timestamp()) * 10**9))
        return {gen_id: points for gen_id, points in sorted(held.items()) if points > 1}

    def iter_day_frames(self, day: dt.date, chunk_size: int = 10000) -> Iterator[pd.DataFrame]:
        """Stream the day's points, one DataFrame per server chunk, so memory is bounded by chunk_size."""
        return reads.iter_day_frames(self._connection, day, chunk_size)


async def _upsert(settings: InfluxSettings, generations: Sequence[Generation], batch_size: int) -> Upserted:
    if not generations:
        return Upserted()
    micros = [microseconds_since_epoch(g.created_at) for g in generations]
    async with LedgerDatabase(settings, batch_size) as database:
        stored = await database.stored(min(micros) * 1000, (max(micros) + 1) * 1000)
        return await database.upsert(generations, stored)


async def _write_lines(settings: InfluxSettings, lines: Sequence[str]) -> None:
    async with LedgerDatabase(settings) as database:
        await database.write_lines(lines)
