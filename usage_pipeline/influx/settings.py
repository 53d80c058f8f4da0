"""Where and how to reach InfluxDB, read from INFLUXDB_* or given directly; secrets never reach a repr."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from usage_pipeline.settings import setting


@dataclass(frozen=True)
class InfluxSettings:
    """Where and how to reach InfluxDB; secrets are excluded from repr so they never reach logs."""

    url: str
    database: str = "openrouter"
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    retention_days: int | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_url(cls, url: str, *, database: str = "openrouter", token: str | None = None,
                 username: str | None = None, password: str | None = None, retention_days: int | None = None,
                 timeout_s: float = 30.0) -> InfluxSettings:
        """Settings for `url`; credentials written into it (`http://user:pw@host`) move to username/password,
        so the URL that is logged and put in error messages never carries them."""
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            username = username or unquote(parts.username or "") or None
            password = password or unquote(parts.password or "") or None
            host = parts.hostname or ""
            netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(parts._replace(netloc=netloc))
        return cls(url=url.rstrip("/"), database=database, token=token, username=username, password=password,
                   retention_days=retention_days, timeout_s=timeout_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InfluxSettings:
        """INFLUXDB_URL (required), _DATABASE, _TOKEN, _USERNAME, _PASSWORD, _RETENTION_DAYS, _TIMEOUT_S."""
        def read(name: str) -> Any:
            return setting(name, environ)

        return cls.from_url(read("INFLUXDB_URL"), database=read("INFLUXDB_DATABASE"), token=read("INFLUXDB_TOKEN"),
                            username=read("INFLUXDB_USERNAME"), password=read("INFLUXDB_PASSWORD"),
                            retention_days=read("INFLUXDB_RETENTION_DAYS"), timeout_s=read("INFLUXDB_TIMEOUT_S"))
