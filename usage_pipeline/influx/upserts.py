"""The capture's side of InfluxDB, on its event loop: read what a time range holds, upsert records into it.

One aiohttp session over the v1 `/query` (chunked) and `/write`. `upsert` places ranks (`ranks.place`),
then writes in batches. A correct run meets no stale point, so it sends no DELETE. When one is met (an id
stored twice by an earlier fault, or a record whose model or provider changed upstream) it is deleted before
the write where the server has DELETE (1.x, 2.x). InfluxDB 3 has none: there the extra points stay, for
`zero_duplicates` to name, and a moved record is refused by id rather than stored twice. A point the
server refuses is found by halving its batch (resending the accepted half is a harmless upsert) and refused by
id with the server's words; no answer, a 5xx, or a refusal of the request itself (401, 403, 404) raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from usage_pipeline.http_session import OwnsSession
from usage_pipeline.influx.connection import RETRY_STATUSES, auth_headers, chunk_series, error_text, result_errors
from usage_pipeline.influx.errors import InfluxQueryError, InfluxWriteError
from usage_pipeline.influx.influxql import delete_point, stored_points_query
from usage_pipeline.influx.points import Bodies, encode
from usage_pipeline.influx.ranks import Placement, StoredPoint, place
from usage_pipeline.influx.reads import stored_points
from usage_pipeline.influx.server import InfluxServer
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.openrouter.generation import Generation

# Points per POST /write (benchmarks/influx_write.py, influxd 1.6.7 sharing 2 cores: 5,000 was the fastest of
# 2,500/5,000/10,000). Bodies are not gzipped: on loopback gzip cost the client more than it saved influxd.
WRITE_BATCH_SIZE = 5000
ATTEMPTS = 5
log = logging.getLogger("usage_pipeline.retries")


@dataclass
class Upserted:
    """Points written, ids rewritten onto the point they had, stale points deleted, and refusals by id."""

    written: int = 0
    kept: int = 0
    stale_deleted: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # generation id -> why it is not stored


class LedgerDatabase(OwnsSession):
    """`async with LedgerDatabase(settings) as db:` one organisation's database, for one capture."""

    def __init__(self, settings: InfluxSettings, batch_size: int = WRITE_BATCH_SIZE) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.url = settings.url.rstrip("/")
        self._server: InfluxServer | None = None  # asked only when a stale point is met

    def open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            headers=auth_headers(self.settings), read_bufsize=1 << 24,  # a chunk of 10,000 rows is one line
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))

    async def stored(self, start_ns: int, end_ns: int) -> list[StoredPoint]:
        """Every point with time in [start_ns, end_ns): id, tags, time, API key label. Chunked, so no row
        limit of the server cuts it short."""
        params = {"db": self.settings.database, "epoch": "ns", "chunked": "true", "chunk_size": "10000"}
        query = {"q": stored_points_query(start_ns, end_ns)}
        found: list[StoredPoint] = []
        try:
            async with self.session.post(f"{self.url}/query", params=params, data=query) as response:
                if response.status >= 300:
                    raise InfluxQueryError(self.settings.redact(f"query failed: HTTP {response.status}: "
                                                                f"{(await response.text())[:300]}"))
                async for line in response.content:
                    if line.strip():
                        found += [point for series in chunk_series(line, self.settings)
                                  for point in stored_points(series)]
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise InfluxQueryError(f"query to {self.url} got no response ({type(exc).__name__})") from None
        return found

    async def upsert(self, records: Sequence[Generation], stored: Sequence[StoredPoint],
                     bodies: Bodies | None = None) -> Upserted:
        """Write `records` over a time range whose stored points are `stored` (all of them); `bodies` holds the
        records' points made as they arrived, if the caller made them."""
        placement = place(records, stored)
        done = Upserted(kept=placement.kept, refused=dict(placement.refused))
        if placement.stale:
            await self._settle_stale(placement, done)
        unique = [record for record in {record.id: record for record in records}.values()
                  if record.id not in done.refused]
        for start in range(0, len(unique), self.batch_size):
            batch = encode(unique[start:start + self.batch_size], placement.ranks, bodies)
            done.refused.update(batch.refused)
            refused = await self._write_isolating(batch.lines, batch.ids)
            done.refused.update(refused)
            done.written += len(batch.lines) - len(refused)
        return done

    async def _settle_stale(self, placement: Placement, done: Upserted) -> None:
        """Delete the stale points before the write (so none outlives its rewrite) where the server can; on
        one that cannot, refuse each moved record by id and leave the extra points to the duplicates check."""
        server = await self.server()
        if server.deletes:
            for point in placement.stale:
                await self._query(delete_point(point.model, point.provider, point.time_ns))
            done.stale_deleted = len(placement.stale)
            return
        for point in placement.stale:
            if point.generation_id in placement.moved and point.generation_id not in done.refused:
                done.refused[point.generation_id] = (
                    f"its model or provider changed upstream; {server} cannot delete the point stored as "
                    f"model={point.model!r} provider={point.provider!r}, so the record keeps that point")
                placement.ranks.pop(point.generation_id, None)

    async def server(self) -> InfluxServer:
        """What the server can do, from `/ping` (asked once)."""
        if self._server is None:
            try:
                async with self.session.get(f"{self.url}/ping") as response:
                    if response.status >= 300:
                        raise InfluxQueryError(f"ping {self.url}: HTTP {response.status}")
                    self._server = InfluxServer.from_headers(response.headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise InfluxQueryError(f"ping {self.url} got no response ({type(exc).__name__})") from None
        return self._server

    async def _query(self, statement: str) -> None:
        async with self.session.post(f"{self.url}/query", params={"db": self.settings.database},
                                     data={"q": statement}) as response:
            payload = await response.json(content_type=None)
            errors = result_errors(payload) if response.status < 300 else [f"HTTP {response.status}"]
            if errors:
                raise InfluxQueryError(self.settings.redact(f"query failed: {'; '.join(errors)} ({statement[:200]})"))

    async def _write_isolating(self, lines: list[str], ids: list[str]) -> dict[str, str]:
        """Write `lines`; when the server refuses some, find them by halving: their ids -> the reason."""
        if not lines:
            return {}
        try:
            await self.write_lines(lines)
            return {}
        except InfluxWriteError as exc:
            if exc.status is None or exc.status >= 500 or exc.status in (401, 403, 404):
                raise
            if len(lines) == 1:
                return {ids[0]: f"InfluxDB refused its point: HTTP {exc.status}: {exc.server_text[:300]}"}
        middle = len(lines) // 2
        return {**await self._write_isolating(lines[:middle], ids[:middle]),
                **await self._write_isolating(lines[middle:], ids[middle:])}

    async def write_lines(self, lines: Sequence[str]) -> None:
        """POST line protocol (ns precision) as one request, retrying 5xx and broken connections."""
        db = self.settings.database
        body = "\n".join(lines).encode("utf-8")
        for attempt in range(ATTEMPTS):
            status, text = None, ""
            try:
                async with self.session.post(f"{self.url}/write", params={"db": db, "precision": "ns"},
                                             data=body) as response:
                    if response.status < 300:
                        return
                    status = response.status
                    text = self.settings.redact(error_text(
                        await response.text(), response.headers.get("X-Influxdb-Error"), response.reason or ""))
            except (TimeoutError, aiohttp.ClientError) as exc:
                text = type(exc).__name__
            if status is not None and status not in RETRY_STATUSES or attempt == ATTEMPTS - 1:
                break
            log.warning("InfluxDB POST /write: %s; retry %d in %.2f s", f"HTTP {status}" if status else text,
                        attempt + 1, 0.5 * 2**attempt)  # no query string (db=...), no host
            await asyncio.sleep(0.5 * 2**attempt)
        what = f"HTTP {status}: {text}" if status is not None else f"no response ({text})"
        raise InfluxWriteError(f"write of {len(lines)} points to database {db!r} failed: {what}", status=status,
                               database=db, batch_size=len(lines), server_text=text)
