"""Where the OpenRouter API is and which key opens it, read from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


@dataclass(frozen=True)
class OpenRouterSettings:
    """`api_key` must be a management key: analytics and activity refuse inference keys (403)."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = 16
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("OpenRouter API key is empty: set OPENROUTER_API_KEY to a management key")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"OPENROUTER_BASE_URL must be an http(s) URL, got {self.base_url!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
