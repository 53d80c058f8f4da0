"""Every environment variable the project reads, parsed in one place, each with a one-line error.

The Dagster resources read them when a run starts (a field left unset falls back to its variable), the
CLI when a command starts; only `USAGE_START_DATE` (Dagster lists the days from it), `USAGE_ORGANISATIONS`
(checked, so a bad file stops the load in one line), whether `USAGE_CELERY_BROKER_URL` is set (it picks
the executor), whether `USAGE_ALERT_WEBHOOK_URL` is set (the alert sensors start running or stopped) and
`USAGE_CAPTURE_DEADLINE_UTC` (the ledger's freshness policy) are read when the code location loads. A bad
value raises `SettingError` naming the variable and the form it takes, never echoing a secret.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class SettingError(ValueError):
    """A setting that is missing or malformed; the message is one line and names the variable."""


@dataclass(frozen=True)
class Variable:
    name: str
    form: str  # what a good value looks like, for the error
    parse: Callable[[str], Any]
    default: Any = None
    secret: bool = False
    required: bool = False


def _whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
        return value

    return parse


def _positive_number(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError
    return value


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    return text.rstrip("/")


def _token(text: str) -> str:
    """A key or token: surrounding whitespace (a file's trailing newline) is dropped; whitespace or control
    characters inside cannot be sent in a header, so they are refused."""
    if not text or _CONTROL.search(text):
        raise ValueError
    return text


def _name(text: str) -> str:
    if not text or _CONTROL.search(text.replace(" ", "")):
        raise ValueError
    return text


def _broker_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "amqp", "amqps") or not parts.hostname:
        raise ValueError
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    return text


def _postgres_url(text: str) -> str:
    if urlsplit(text).scheme not in ("postgresql", "postgres"):
        raise ValueError
    return text


def _webhook_url(text: str) -> str:
    """An http(s) URL kept exactly as given: Slack's carries its secret in the path, so nothing is stripped."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(text):
        raise ValueError
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    return text


def _time_of_day(text: str) -> dt.time:
    """HH:MM, 00:00 to 23:59 (no seconds: Dagster's deadline cron has minutes at most)."""
    if not re.fullmatch(r"\d\d:\d\d", text):
        raise ValueError
    return dt.time.fromisoformat(text)


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("OPENROUTER_API_KEY", "an OpenRouter management key without spaces", _token, secret=True,
             required=True),
    Variable("OPENROUTER_BASE_URL", "an http(s) URL", _http_url, "https://openrouter.ai/api/v1"),
    Variable("OPENROUTER_MAX_CONCURRENCY", "a positive integer", _whole_number(1), 512),
    Variable("OPENROUTER_MAX_RPS", "a positive number of requests per second", _positive_number),
    Variable("OPENROUTER_RECORD_TIMEOUT_S", "a positive number of seconds", _positive_number, 10.0),
    Variable("OPENROUTER_GIVE_UP_AFTER_S", "a positive number of seconds", _positive_number, 20.0),
    Variable("INFLUXDB_URL", "an http(s) URL such as http://127.0.0.1:8086", _http_url, required=True),
    Variable("INFLUXDB_DATABASE", "a database (bucket) name", _name, "openrouter"),
    Variable("INFLUXDB_TOKEN", "a token without spaces", _token, secret=True),
    Variable("INFLUXDB_USERNAME", "a user name", _name),
    Variable("INFLUXDB_PASSWORD", "a password without whitespace or control characters", _token, secret=True),
    Variable("INFLUXDB_RETENTION_DAYS", "a whole number of days, 0 for forever", _whole_number(0)),
    Variable("INFLUXDB_TIMEOUT_S", "a positive number of seconds", _positive_number, 30.0),
    Variable("USAGE_START_DATE", "a date as YYYY-MM-DD", _date),
    Variable("USAGE_ORGANISATIONS", "the path of a YAML file listing the organisations", _name),
    Variable("USAGE_CELERY_BROKER_URL", "a Celery broker URL such as redis://127.0.0.1:6379/0", _broker_url,
             secret=True),
    Variable("USAGE_DUCKDB_PATH", "a file path", _name, "data/usage.duckdb"),
    Variable("USAGE_RECAPTURE_AFTER_HOURS", "a positive number of hours", _positive_number, 6.0),
    Variable("USAGE_RECAPTURE_MAX_ATTEMPTS", "a positive integer", _whole_number(1), 5),
    Variable("BROADCAST_TOKEN", "a bearer token without spaces (OpenRouter's destination sends it in the "
             "Authorization header)", _token, secret=True),
    Variable("BROADCAST_JOURNAL_PATH", "a file path", _name, "data/broadcast.sqlite3"),
    Variable("BROADCAST_MAX_BODY_BYTES", "a whole number of bytes, at least 1024", _whole_number(1024), 8 << 20),
    Variable("BROADCAST_DRAIN_LAG_S", "a positive number of seconds", _positive_number, 15.0),
    Variable("BROADCAST_JOURNAL_RETENTION_DAYS", "a whole number of days", _whole_number(0), 7),
    Variable("USAGE_LOCK_DATABASE_URL", "a PostgreSQL URL such as postgresql://user:password@host:5432/db",
             _postgres_url, secret=True),
    Variable("USAGE_ALERT_WEBHOOK_URL", "an http(s) URL taking Slack-shaped JSON posts (e.g. a Slack incoming "
             "webhook)", _webhook_url, secret=True),
    Variable("USAGE_CAPTURE_DEADLINE_UTC", "a time of day as HH:MM (UTC) by which the day before is captured",
             _time_of_day, dt.time(6, 0)),
    Variable("USAGE_HISTORY_DAYS", "a whole number of days from 0 to 365 (0: no history)", _whole_number(0, 365), 365),
)}


def setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The variable's parsed value, its default when unset or empty, or a SettingError."""
    return _read(VARIABLES[name], environ)


def secret_setting(name: str, form: str, environ: Mapping[str, str] | None = None) -> str:
    """A required secret in a variable the configuration names (an organisation's `key_variable`), checked
    like OPENROUTER_API_KEY; the error names the variable, never the value."""
    return str(_read(Variable(name, form, _token, secret=True, required=True), environ))


def _read(variable: Variable, environ: Mapping[str, str] | None) -> Any:
    raw = (os.environ if environ is None else environ).get(variable.name)
    text = None if raw is None else raw.strip()
    if not text:
        if variable.required:
            raise SettingError(f"{variable.name} is not set: it must be {variable.form}")
        return variable.default
    try:
        return variable.parse(text)
    except (ValueError, TypeError, OverflowError):
        shown = "" if variable.secret else f", got {text[:80]!r}"
        raise SettingError(f"{variable.name} must be {variable.form}{shown}") from None


def checked(name: str, value: Any) -> Any:
    """A value given directly (a resource field) for the variable, checked like the variable itself."""
    if isinstance(value, str):
        return setting(name, {name: value})
    return value
