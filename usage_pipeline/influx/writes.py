"""The ledger's write path: windows of generations as line protocol, POSTed in batches, and each point
the server refuses found by halving its batch and refused by id (never altered to fit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from usage_pipeline.influx.connection import InfluxConnection, server_text
from usage_pipeline.influx.errors import InfluxWriteError
from usage_pipeline.influx.points import iter_line_batches
from usage_pipeline.openrouter.generation import Generation

# Points per POST /write. Measured with benchmarks/influx_write.py (influxd 1.6.7 sharing 2 cores, write
# calls of 10,000): encoding batch k+1 during the POST of batch k at 5,000 was the fastest end to end in two
# sets of runs (34.2k and 39.8k points/s), ahead of encoding first then POSTing 5,000s (31.7k, 39.3k) or one
# 10,000 (32.1k, 37.1k), and of overlapping at 2,500 (32.9k, 37.1k). Bodies are not gzipped: on loopback
# gzip (level 1) cost the client ~2.5 µs a point and influxd no less CPU (22-25 µs a point either way).
WRITE_BATCH_SIZE = 5000


@dataclass
class WriteResult:
    """Points written, and generations refused by id with the reason (never altered to fit)."""

    written: int = 0
    refused: dict[str, str] = field(default_factory=dict)


def write_lines(connection: InfluxConnection, lines: Sequence[str]) -> None:
    """POST line protocol (ns precision) as one request; raise InfluxWriteError unless 2xx."""
    if not lines:
        return
    db = connection.settings.database
    try:
        response = connection.session.post(
            f"{connection.url}/write",
            params={"db": db, "precision": "ns"},
            data="\n".join(lines).encode("utf-8"),
            timeout=connection.settings.timeout_s,
        )
    except requests.RequestException as exc:
        text = connection.redact(str(exc))
        raise InfluxWriteError(
            f"write of {len(lines)} points to database {db!r} got no response: {text}",
            status=None, database=db, batch_size=len(lines), server_text=text,
        ) from exc
    if not response.ok:
        text = connection.redact(server_text(response))
        raise InfluxWriteError(
            f"write of {len(lines)} points to database {db!r} failed: HTTP {response.status_code}: {text}",
            status=response.status_code, database=db, batch_size=len(lines), server_text=text,
        )


def write_isolating(connection: InfluxConnection, lines: list[str], ids: list[str]) -> dict[str, str]:
    """Write `lines`; if the server refuses some, find them by halving and return their ids -> reason.

    Every write is an upsert, so resending the accepted half is harmless. A 5xx, no answer, or an
    auth/database error (401, 403, 404) says nothing about single points and is raised.
    """
    try:
        write_lines(connection, lines)
        return {}
    except InfluxWriteError as exc:
        if exc.status is None or exc.status >= 500 or exc.status in (401, 403, 404):
            raise
        if len(lines) == 1:
            return {ids[0]: f"InfluxDB refused its point: HTTP {exc.status}: {exc.server_text[:300]}"}
    middle = len(lines) // 2
    return {**write_isolating(connection, lines[:middle], ids[:middle]),
            **write_isolating(connection, lines[middle:], ids[middle:])}


def write_generations(connection: InfluxConnection, generations: Sequence[Generation],
                      batch_size: int = WRITE_BATCH_SIZE, ranks: Mapping[str, int] | None = None) -> WriteResult:
    """Upsert generations: what was written, and what was refused by id. With `ranks` (a `RankBook`'s) any
    batch will do; without, it must be a complete window (`points.assign_ranks` ranks it by id order).

    Batch k+1 is encoded while batch k is POSTed by one background thread, so at most one request is
    in flight and one more batch is held.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    result = WriteResult()

    def settle(posted: Future[dict[str, str]], size: int) -> None:
        refused = posted.result()
        result.refused.update(refused)
        result.written += size - len(refused)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-write") as poster:
        in_flight: tuple[Future[dict[str, str]], int] | None = None
        for batch in iter_line_batches(generations, batch_size, ranks):  # encodes while the previous one posts
            result.refused.update(batch.refused)
            if in_flight is not None:
                settle(*in_flight)
            in_flight = (poster.submit(write_isolating, connection, batch.lines, batch.ids), len(batch.lines))
        if in_flight is not None:
            settle(*in_flight)
    return result
