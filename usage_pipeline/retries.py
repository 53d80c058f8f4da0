"""The urllib3 retry policy behind the plain `requests` session of InfluxDB's 1.x API (the capture's own
calls, on its event loop, retry with tenacity and their own small policies).

Each caller passes its own statuses, methods, budget and backoff. The policy adds what urllib3 lacks:

- a warning per retry, so a slow run says what it is waiting for. It names the service, the method, the
  URL's path (never its query string or credentials), the status or error type, the attempt and the wait;
  never a header, a body or an exception's text, which can carry a key or a token;
- an optional give-up deadline: once a request has kept failing for `give_up_after_s`, a dead or broken
  server fails the caller in bounded time instead of after every backoff of every retry.

urllib3's own warning for a retry after a connection error is dropped for these policies: it repeats
the line logged here, with the request's query string in it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)


class _RepeatedRetryWarning(logging.Filter):
    """Drops urllib3's `Retrying (<policy>) after connection broken by ...: <url?query>` for a LoggedRetry."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (str(record.msg).startswith("Retrying (") and args and isinstance(args[0], LoggedRetry))


class LoggedRetry(Retry):
    """urllib3's `Retry`, plus a warning per retry and a give-up deadline."""

    def __init__(self, *args: Any, service: str = "HTTP", give_up_after_s: float | None = None,
                 deadline: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service
        self.give_up_after_s = give_up_after_s
        self.deadline = deadline  # set at the first failure of a request, when give_up_after_s is

    def new(self, **kw: Any) -> LoggedRetry:
        """The next state of one request's retries (urllib3 copies the policy at every attempt)."""
        kw.setdefault("service", self.service)
        kw.setdefault("give_up_after_s", self.give_up_after_s)
        if self.deadline is None and self.give_up_after_s is not None:
            kw.setdefault("deadline", time.monotonic() + self.give_up_after_s)
        else:
            kw.setdefault("deadline", self.deadline)
        return super().new(**kw)

    def _remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or self._remaining() <= 0

    def get_backoff_time(self) -> float:
        return max(0.0, min(super().get_backoff_time(), self._remaining()))

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Wait as urllib3 would (the server's `Retry-After` if honoured and non-zero, else the backoff),
        computed once so that the wait logged is the wait slept, jitter included."""
        wait = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        if not wait:
            wait = self.get_backoff_time()
        self._log_retry(wait)
        if wait > 0:
            time.sleep(wait)

    def _log_retry(self, wait: float) -> None:
        if not self.history:
            return
        last = self.history[-1]
        cause = f"HTTP {last.status}" if last.status is not None else type(last.error).__name__
        log.warning("%s %s %s: %s; retry %d in %.2f s", self.service, last.method or "?",
                    request_path(last.url), cause, len(self.history), wait)


_REPEATED_RETRY_WARNING = _RepeatedRetryWarning()
logging.getLogger("urllib3.connectionpool").addFilter(_REPEATED_RETRY_WARNING)  # added once: same instance


def request_path(url: str | None) -> str:
    """The path of a URL or of a request target (`/write?db=x`): no scheme, credentials, host or query."""
    if not url:
        return "?"
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "?"


def retry_policy(*, service: str, statuses: Collection[int], methods: Collection[str], total: int,
                 read: int | None = None, backoff_factor: float, backoff_jitter: float = 0.0,
                 backoff_max: float = Retry.DEFAULT_BACKOFF_MAX,
                 retry_after_max: float = Retry.DEFAULT_RETRY_AFTER_MAX,
                 give_up_after_s: float | None = None) -> LoggedRetry:
    """A policy retrying connection errors, read errors (at most `read`, default `total`) and `statuses`
    for `methods`, at most `total` times, with exponential backoff honouring `Retry-After`.

    The last failing response is handed back rather than raised (`raise_on_status=False`), so the caller
    can turn the server's own error text into its error.
    """
    return LoggedRetry(
        total=total,
        connect=total,
        read=total if read is None else read,
        status=total,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_jitter,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        status_forcelist=frozenset(statuses),
        allowed_methods=frozenset(methods),
        respect_retry_after_header=True,
        raise_on_status=False,
        service=service,
        give_up_after_s=give_up_after_s,
    )
