"""The ledger's InfluxDB store over the 1.x-compatible HTTP API (`/write`, `/query`, `/ping`): the one
object callers use.

That API is served natively by 1.x and by 2.x/3.x (database = bucket, via a DBRP mapping), so one client
covers all three. The work is done by one module per concern, which this class ties to one connection:
`settings` (where and how), `connection` (the session, its retries, redacted errors), `writes` (batches,
refusals by id), `reads` (per-day counts and frames), `database_setup` (create or verify the database),
`influxql` (quoting and time bounds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import pandas as pd

from usage_pipeline.influx import database_setup, reads, writes
from usage_pipeline.influx.connection import InfluxConnection
from usage_pipeline.influx.influxql import quote_ident, quote_literal
from usage_pipeline.influx.points import MEASUREMENT
from usage_pipeline.influx.reads import DayCounts, StoredIdentity
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.writes import WRITE_BATCH_SIZE, WriteResult
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.generation import Generation


class InfluxStore:
    """The `generations` ledger in one database, through the 1.x-compatible HTTP API."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._connection = InfluxConnection(settings)

    def __enter__(self) -> InfluxStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._connection.close()

    # ---- server -------------------------------------------------------------------------------

    def ping(self) -> str:
        """The server version (X-Influxdb-Version), proving it is up and speaks the 1.x API."""
        return self._connection.ping()

    def ensure_database(self) -> None:
        """Make the database ready to write; on 1.x create it and its retention, elsewhere only verify."""
        database_setup.ensure_database(self._connection)

    # ---- writes -------------------------------------------------------------------------------

    def write_generations(self, generations: Sequence[Generation], batch_size: int = WRITE_BATCH_SIZE,
                          ranks: Mapping[str, int] | None = None) -> WriteResult:
        """Upsert generations: what was written, and what was refused by id. Without `ranks` (id -> rank, as
        a `RankBook` gives them) the set must hold every generation of each of its µs (a whole window).

        A generation that line protocol cannot carry, or that the server refuses (a 4xx naming its line,
        found by splitting the batch), is refused by id with the reason and the rest is written. A server
        that does not answer, or answers 5xx, raises InfluxWriteError: nothing can be known about the batch.
        """
        return writes.write_generations(self._connection, generations, batch_size, ranks)

    def write_lines(self, lines: Sequence[str]) -> None:
        """POST line protocol (ns precision) as one request; raise InfluxWriteError unless 2xx."""
        writes.write_lines(self._connection, lines)

    def delete_point(self, model: str, provider: str | pd.api.typing.NAType | None, time_ns: int) -> None:
        """Delete the one point with this identity (1.x only; `provider = ''` matches an absent tag).

        A missing provider may arrive as None or as a frame's <NA>: anything but a non-empty str is absent.
        """
        provider_value = provider if isinstance(provider, str) else ""
        self.query(
            f"DELETE FROM {quote_ident(MEASUREMENT)} WHERE {quote_ident('model')} = {quote_literal(model)} "
            f"AND {quote_ident('provider')} = {quote_literal(provider_value)} AND time = {int(time_ns)}"
        )

    # ---- queries ------------------------------------------------------------------------------

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the first statement's series (empty when it has none)."""
        return self._connection.query(influxql)

    def day_counts(self, day: dt.date) -> DayCounts:
        """Points and distinct generation ids in the UTC day."""
        return reads.day_counts(self._connection, day)

    def ids_by_model(self, day: dt.date) -> dict[str, int]:
        """Distinct generation ids per model in the UTC day."""
        per_model = reads.per_model(self._connection, f"COUNT(DISTINCT({quote_ident('generation_id')}))", day)
        return {model: int(value or 0) for model, value in per_model.items()}

    def cost_by_model(self, day: dt.date) -> dict[str, float]:
        """SUM(total_cost) per model in the UTC day."""
        per_model = reads.per_model(self._connection, f"SUM({quote_ident('total_cost')})", day)
        return {model: float(value or 0.0) for model, value in per_model.items()}

    def usage_by_model(self, day: dt.date) -> dict[str, float]:
        """SUM(usage) per model in the UTC day (credits charged, which OpenRouter's analytics report)."""
        per_model = reads.per_model(self._connection, f"SUM({quote_ident('usage')})", day)
        return {model: float(value or 0.0) for model, value in per_model.items()}

    def stored_identities(self, start_ns: int, end_ns: int) -> list[StoredIdentity]:
        """Every point with time in [start_ns, end_ns): generation id, tags, time, and its api_key field."""
        return reads.stored_identities(self._connection, start_ns, end_ns)

    def day_ids(self, day: dt.date) -> set[str]:
        """The generation ids stored in the UTC day."""
        start, end = day_bounds(day)
        found = self.stored_identities(int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9)
        return {identity.point.generation_id for identity in found}

    def iter_day_frames(self, day: dt.date, chunk_size: int = 10000) -> Iterator[pd.DataFrame]:
        """Stream the day's points, one DataFrame per server chunk, so memory is bounded by chunk_size."""
        return reads.iter_day_frames(self._connection, day, chunk_size)
