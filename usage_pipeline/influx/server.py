"""What the InfluxDB a run meets can do, read from its `/ping` headers.

1.x, 2.x and 3.x all serve the v1 `/write` and `/query` the ledger speaks, but they differ where it matters:
only 1.x creates a database through InfluxQL; 3.x's InfluxQL has no DELETE, so a point once written stays;
3 Core holds 5 databases (Enterprise 100) and its database names are letters, digits, `_` and `-`, at most 64.
A configuration that cannot work against the server is refused when a run starts (`refusal`), in one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DATABASE_LIMITS = {"Core": 5, "Enterprise": 100}  # InfluxDB 3, by X-Influxdb-Build
_V3_DATABASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class InfluxServer:
    """The server's version (`X-Influxdb-Version`) and build (`X-Influxdb-Build`: OSS, Core, Enterprise)."""

    version: str
    build: str = ""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> InfluxServer:
        return cls(headers.get("X-Influxdb-Version", "unknown"), headers.get("X-Influxdb-Build", ""))

    def __str__(self) -> str:
        return f"InfluxDB {self.version}" + (f" {self.build}" if self.build else "")

    @property
    def major(self) -> int | None:
        """1, 2, 3 from "1.6.7~rc0", "v2.7.4", "3.0.1"; None if unparsable."""
        head = self.version.strip().lstrip("vV").split(".", 1)[0]
        return int(head) if head.isdigit() else None

    @property
    def creates_databases(self) -> bool:
        """Only 1.x runs InfluxQL `CREATE`; 2.x buckets and 3.x databases are made with their own CLIs."""
        return self.major == 1

    @property
    def deletes(self) -> bool:
        """1.x and 2.x run InfluxQL `DELETE`; 3.x's InfluxQL has none (Core deletes nothing at all)."""
        return self.major in (1, 2)

    @property
    def database_limit(self) -> int | None:
        return DATABASE_LIMITS.get(self.build) if self.major == 3 else None


def refusal(server: InfluxServer, databases: Sequence[str]) -> str | None:
    """Why the organisations' `databases` cannot work on `server`, in one line; None when they can."""
    if server.major != 3:
        return None
    bad = [name for name in databases if not _V3_DATABASE_NAME.fullmatch(name)]
    if bad:
        return (f"{server} cannot hold database {bad[0]!r}: InfluxDB 3 names are letters, digits, '_' and '-', "
                "starting with a letter or digit, at most 64 characters (set INFLUXDB_DATABASE or the "
                "organisation's influxdb_database)")
    limit = server.database_limit
    if limit is not None and len(set(databases)) > limit:
        return (f"{server} holds at most {limit} databases and the organisations need {len(set(databases))} "
                "(one each): use InfluxDB 3 Enterprise, 1.x or 2.x, or split the organisations across servers "
                "(docs/influxdb.md)")
    return None
