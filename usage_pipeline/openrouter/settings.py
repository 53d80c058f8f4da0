"""Where the OpenRouter API is, which key opens it, and how hard the client may push it."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from usage_pipeline.settings import SettingError

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


def redact_url(url: str) -> str:
    """The URL with any `user:password@` replaced by `***@`, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unreadable URL>"
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1]))


@dataclass(frozen=True)
class OpenRouterSettings:
    """`api_key` must be a management key (analytics and activity refuse inference keys); `record_timeout_s`
    bounds one `GET /generation` (some hang, and are retried), `timeout_s` one analytics or activity answer."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = 512
    max_rps: float | None = None
    record_timeout_s: float = 10.0
    give_up_after_s: float = 20.0  # every request failing this long (a dead or broken server) ends the day
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise SettingError("OpenRouter API key is empty: set OPENROUTER_API_KEY to a management key")
        if not self.base_url.startswith(("http://", "https://")):
            raise SettingError(f"OPENROUTER_BASE_URL must be an http(s) URL, got {redact_url(self.base_url)!r}")
        if self.max_concurrency < 1:
            raise SettingError(f"OPENROUTER_MAX_CONCURRENCY must be at least 1, got {self.max_concurrency}")
        if self.max_rps is not None and self.max_rps <= 0:
            raise SettingError(f"OPENROUTER_MAX_RPS must be a positive number, got {self.max_rps}")
        if self.record_timeout_s <= 0:
            raise SettingError(f"OPENROUTER_RECORD_TIMEOUT_S must be positive, got {self.record_timeout_s}")
        if self.give_up_after_s <= 0:
            raise SettingError(f"OPENROUTER_GIVE_UP_AFTER_S must be positive, got {self.give_up_after_s}")
        if self.api_key != self.api_key.strip() or any(c.isspace() or ord(c) < 32 for c in self.api_key):
            raise SettingError("the OpenRouter API key holds whitespace or control characters; it cannot be sent "
                             "in a header (check OPENROUTER_API_KEY)")
