"""Where and how to reach InfluxDB, with credentials kept out of reprs, URLs and messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit


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

    def redact(self, text: str) -> str:
        """`text` without the token or password: a server or library could echo a credential back."""
        for secret in (self.token, self.password):
            if secret:
                text = text.replace(secret, "***")
        return text
