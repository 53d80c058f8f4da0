"""Make a database ready for the ledger: on 1.x create it with its retention; on 2.x/3.x, where the
bucket and its DBRP mapping are made outside the 1.x API, only verify it and say how to fix it."""

from __future__ import annotations

import logging

from usage_pipeline.influx.connection import InfluxConnection
from usage_pipeline.influx.errors import InfluxQueryError, InfluxSetupError
from usage_pipeline.influx.influxql import quote_ident

log = logging.getLogger(__name__)

RETENTION_POLICY = "autogen"  # data already lives here; switching the default RP would hide it


def major_version(version: str) -> int | None:
    """Major version from X-Influxdb-Version ("1.6.7~rc0", "v2.7.4", "3.0.1"); None if unparsable."""
    head = version.strip().lstrip("vV").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def ensure_database(connection: InfluxConnection) -> None:
    """Make the database ready to write; on 1.x create it and its retention, elsewhere only verify."""
    version = connection.ping()
    if major_version(version) == 1:
        _ensure_v1_database(connection)
    else:
        _verify_queryable(connection, version)


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


def _verify_queryable(connection: InfluxConnection, version: str) -> None:
    if connection.settings.retention_days:
        log.warning("retention_days is ignored on InfluxDB %s: set the bucket's retention instead", version)
    try:
        connection.query("SHOW MEASUREMENTS LIMIT 1")
    except InfluxQueryError as exc:
        db = connection.settings.database
        raise InfluxSetupError(
            f"InfluxDB {version}: database {db!r} is not queryable through the 1.x API ({exc}). "
            f"On 2.x create a bucket and map it: `influx bucket create -n {db}` then "
            f"`influx v1 dbrp create --db {db} --rp autogen --bucket-id <bucket id> --default`, "
            "and use a token with read/write access to it. On 3.x the database must exist "
            f"(`influxdb3 create database {db}`) and the token must be allowed to use it."
        ) from exc
