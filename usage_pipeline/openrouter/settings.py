"""Where the OpenRouter API is, which key opens it, and how hard the client may push it."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


@dataclass(frozen=True)
class OpenRouterSettings:
    """`api_key` must be a management key: analytics and activity refuse inference keys (403).

    `max_concurrency` is the ceiling of record fetches in flight (the adaptive limit grows up to it);
    `max_rps` optionally caps record requests per second; `record_timeout_s` bounds one `GET /generation`
    (they sometimes hang; a timed-out one is retried); `timeout_s` bounds one analytics or activity call.
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = 512
    max_rps: float | None = None
    record_timeout_s: float = 10.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("OpenRouter API key is empty: set OPENROUTER_API_KEY to a management key")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"OPENROUTER_BASE_URL must be an http(s) URL, got {self.base_url!r}")
        if self.max_concurrency < 1:
            raise ValueError(f"OPENROUTER_MAX_CONCURRENCY must be at least 1, got {self.max_concurrency}")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ValueError(f"OPENROUTER_MAX_RPS must be a positive number, got {self.max_rps}")
        if self.record_timeout_s <= 0:
            raise ValueError(f"OPENROUTER_RECORD_TIMEOUT_S must be positive, got {self.record_timeout_s}")
