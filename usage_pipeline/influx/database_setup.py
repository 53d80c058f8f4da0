"""Make a database ready for the ledger. On 1.x create it with its retention. On 2.x/3.x, where buckets and
databases are made with the server's own CLI, say the exact command (`setup_commands`, with the retention)
and verify the result; a configuration the server cannot hold is refused first, in one line."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from usage_pipeline.influx.connection import InfluxConnection
from usage_pipeline.influx.errors import InfluxQueryError, InfluxSetupError
from usage_pipeline.influx.influxql import quote_ident
from usage_pipeline.influx.server import InfluxServer, refusal

RETENTION_POLICY = "autogen"  # data already lives here; switching the default RP would hide it


def ensure_database(connection: InfluxConnection, databases: Sequence[str] = ()) -> InfluxServer:
    """Make the database ready to write, or raise InfluxSetupError in one line. `databases`: every database
    the organisations use on this server (the limit and names of 3.x apply to all of them)."""
    server = connection.server()
    problem = refusal(server, [*databases] or [connection.settings.database])
    if problem:
        raise InfluxSetupError(problem)
    if server.creates_databases:
        _ensure_v1_database(connection)
    else:
        _verify_queryable(connection, server)
    return server


def setup_commands(server: InfluxServer, database: str, retention_days: int | None) -> list[str]:
    """What the operator runs on 2.x (a bucket, which the v1 API maps as `<bucket>/autogen`) or on 3.x (a
    database; on Core its retention can never change afterwards)."""
    name = shlex.quote(database)
    if server.major == 2:
        return [f"influx bucket create --name {name} --retention {f'{retention_days}d' if retention_days else '0'}"]
    retention = f"--retention-period {retention_days}d " if retention_days else ""
    return [f"influxdb3 create database {retention}{name}"]


def _ensure_v1_database(connection: InfluxConnection) -> None:
    days = connection.settings.retention_days or 0
    if days < 0:
        raise ValueError(f"retention_days must be >= 0 (0 or None = keep forever), got {days}")
    db = quote_ident(connection.settings.database)
    connection.query(f"CREATE DATABASE {db}")  # a no-op when it exists
    existing = {row[0] for series in connection.query(f"SHOW RETENTION POLICIES ON {db}") for row in series["values"]}
    verb = "ALTER" if RETENTION_POLICY in existing else "CREATE"
    duration = f"{days}d" if days else "INF"
    # 1.x's own defaults; stated explicitly because ALTER keeps the old shard duration otherwise.
    shard = "1h" if 0 < days < 2 else "1d" if 0 < days < 180 else "7d"
    connection.query(
        f"{verb} RETENTION POLICY {quote_ident(RETENTION_POLICY)} ON {db} "
        f"DURATION {duration} REPLICATION 1 SHARD DURATION {shard} DEFAULT"
    )


def _verify_queryable(connection: InfluxConnection, server: InfluxServer) -> None:
    try:
        connection.query("SHOW MEASUREMENTS LIMIT 1")
    except InfluxQueryError as exc:
        settings = connection.settings
        commands = " && ".join(setup_commands(server, settings.database, settings.retention_days))
        raise InfluxSetupError(
            f"{server}: database {settings.database!r} is not queryable through the v1 API ({exc}); create it "
            f"with `{commands}` (`usage-pipeline influx-setup` prints this and verifies) and use a token that "
            "may read and write it") from exc
