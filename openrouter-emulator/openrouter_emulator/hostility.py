"""What the real service does to a client under load: latency with a tail, hangs, 429s, CDN pages.

Every draw comes from the seed, one stream per kind of chance, so the same requests in the same order
meet the same misbehaviour, and switching one knob never shifts another's draws. The scripted faults
and the limiters that decide *when* to refuse are `faults` and `limiters`; this decides how the answer
looks and when.
"""

from __future__ import annotations

import math
import random

from openrouter_emulator.faults import cdn_error_page, error_body, rate_limit_body
from openrouter_emulator.limiters import Refusal
from openrouter_emulator.protocol import Request, Response
from openrouter_emulator.runtime_config import RuntimeConfig
from openrouter_emulator.stats import Stats

HTML_CONTENT_TYPE = "text/html; charset=UTF-8"


class Hostility:
    """The seeded misbehaviour of `/api/v1` answers, as `config` currently asks; counts into `stats`."""

    def __init__(self, seed: int, config: RuntimeConfig, stats: Stats) -> None:
        self._config = config
        self._stats = stats
        self._random = {name: random.Random(f"{seed}:{name}")
                        for name in ("latency", "hang", "retry_after", "html", "ray", "throttle")}

    def latency_s(self) -> float:
        """One lognormal latency sample (seconds) with the configured median and sigma; 0 when off."""
        median = self._config.latency_median_ms
        if median <= 0:
            return 0.0
        sigma = self._config.latency_sigma
        sample = median if sigma <= 0 else median * math.exp(sigma * self._random["latency"].gauss(0.0, 1.0))
        return sample / 1000

    def hangs(self, request: Request) -> bool:
        """Whether this answer first hangs `hang_seconds` (only `GET /generation`, the call pollers repeat)."""
        config = self._config
        return (request.method == "GET" and request.path == "/generation" and config.hang_share > 0
                and self._random["hang"].random() < config.hang_share)

    def throttles(self, request: Request) -> bool:
        """Whether this request meets a lone 429 (`throttle_share`; only `GET /generation`, the call pollers
        repeat): no budget behind it, so no `X-RateLimit-*`, just `Retry-After: 1`."""
        share = self._config.throttle_share
        return (request.method == "GET" and request.path == "/generation"
                and self._chance("throttle", share))

    def throttled(self, user_id: str | None) -> Response:
        """A lone 429: `Retry-After: 1` and no `X-RateLimit-*` headers; the live body (or the spec's example)."""
        self._stats.throttled += 1
        body = rate_limit_body(user_id) if self._config.shapes == "live" else error_body(429)
        return Response(429, body, {"Retry-After": "1"})

    def rate_limited(self, refusal: Refusal, user_id: str | None) -> Response:
        """The account limiter's 429, whichever kind refused: JSON with `X-RateLimit-*` headers (and, live, the
        same values in the body's `metadata.headers`, beside the account's `user_id`), or a CDN's page."""
        if self._chance("html", self._config.html_error_share):
            return self._cdn_page(429, refusal.retry_after_s)
        headers = {"X-RateLimit-Limit": str(refusal.budget), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(refusal.reset_epoch_ms)}
        body = rate_limit_body(user_id, headers) if self._config.shapes == "live" else error_body(429)
        if self._chance("retry_after", self._config.retry_after_share):
            headers["Retry-After"] = str(refusal.retry_after_s)
        return Response(429, body, headers)

    def error_page_or(self, response: Response) -> Response:
        """A 429 or 5xx from a fault becomes a CDN's HTML page for `html_error_share` of them."""
        if (response.status == 429 or response.status >= 500) and self._chance("html", self._config.html_error_share):
            retry_after = response.headers.get("Retry-After")
            return self._cdn_page(response.status, int(retry_after) if retry_after else 1)
        return response

    def _chance(self, stream: str, share: float) -> bool:
        return share > 0 and (share >= 1 or self._random[stream].random() < share)

    def _cdn_page(self, status: int, retry_after_s: int) -> Response:
        self._stats.html_errors += 1
        ray = f"{self._random['ray'].getrandbits(64):016x}-FRA"
        headers = {"Server": "cloudflare", "CF-RAY": ray, "Cache-Control": "private, max-age=0, no-store"}
        if self._chance("retry_after", self._config.retry_after_share):
            headers["Retry-After"] = str(max(1, retry_after_s))
        return Response(status, None, headers, raw=cdn_error_page(status, ray), content_type=HTML_CONTENT_TYPE)
