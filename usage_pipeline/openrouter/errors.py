"""What can go wrong talking to OpenRouter, as exceptions whose messages name the endpoint, the server's reason
and what to do; never the key."""

from __future__ import annotations

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 524, 529})  # retried; 401/402/403 never are


class OpenRouterError(RuntimeError):
    """Any failure talking to OpenRouter; the message names the endpoint and the server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OpenRouterAuthError(OpenRouterError):
    """401/402/403: the key is wrong, out of credit, or not a management key. Never retried."""


def http_error(where: str, status: int, message: str) -> OpenRouterError:
    """The error for a final non-2xx answer: what it means and what to do about it."""
    if status == 401:
        return OpenRouterAuthError(f"{where}: 401 {message}: OpenRouter did not accept the key; "
                                   "set OPENROUTER_API_KEY to a valid management key", status)
    if status == 402:
        return OpenRouterAuthError(f"{where}: 402 {message}: the account behind the key is out of credit", status)
    if status == 403:
        return OpenRouterAuthError(f"{where}: 403 {message}: this endpoint needs a management key "
                                   "(OPENROUTER_API_KEY holds an inference key or one without access)", status)
    if status in TRANSIENT_STATUSES:
        return OpenRouterError(f"{where}: still {status} {message} after retries with backoff", status)
    return OpenRouterError(f"{where}: {status} {message}", status)
