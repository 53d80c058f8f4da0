"""POST an alert to USAGE_ALERT_WEBHOOK_URL, retrying briefly; never logging the URL.

A Slack incoming-webhook URL is its own secret (whoever has it can post to the channel), so neither the URL
nor an exception text that may quote it (requests' connection errors name the path) is ever logged: a
failure is reported as the event, the error's type and the HTTP status. A delivery that still fails after
the retries is not tried again later (no event is sent twice): it is logged as a warning and the sensor's
tick says so.
"""

from __future__ import annotations

import logging

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from usage_pipeline.alerts import Alert

log = logging.getLogger(__name__)

ATTEMPTS = 3  # one POST and two retries, 0.5 s then 1 s apart: a sensor tick stays short
TIMEOUT_S = 10.0


class _Retryable(Exception):
    """A 429 or 5xx answer, or no answer: worth another try."""


def post_alert(url: str, alert: Alert, *, attempts: int = ATTEMPTS, wait_s: float = 0.5) -> str | None:
    """POST `alert` as JSON to `url`; None once delivered (a 2xx), else why not, in words without the URL."""
    def once() -> None:
        try:
            response = requests.post(url, json=alert.payload(), timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise _Retryable(type(exc).__name__) from None  # its text may quote the URL's path
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise ValueError(f"HTTP {response.status_code}")  # refused (Slack: 400 invalid_payload, 404, 410)

    try:
        for attempt in Retrying(stop=stop_after_attempt(attempts), retry=retry_if_exception_type(_Retryable),
                                wait=wait_exponential(multiplier=wait_s, max=4 * wait_s), reraise=True):
            with attempt:
                once()
    except (_Retryable, ValueError) as exc:
        reason = f"{exc} after {attempts} attempt(s)" if isinstance(exc, _Retryable) else str(exc)
        log.warning("alert not delivered to USAGE_ALERT_WEBHOOK_URL: %s %s %s: %s", alert.kind, alert.org,
                    alert.day, reason)
        return reason
    return None
