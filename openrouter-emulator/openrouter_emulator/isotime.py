"""The emulator's clock: microseconds since the epoch, UTC days, and its own lenient ISO 8601 parser.

Every part of the emulator counts time in integer microseconds since the epoch and days in UTC, so the
units live here, beside the parser (which depends on nothing outside this package).
"""

from __future__ import annotations

import datetime as dt
import re

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
US_PER_MS = 1_000
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_FRACTION = re.compile(r"\.(\d*)")


def parse_iso8601(value: str) -> dt.datetime:
    """An aware UTC datetime from an ISO 8601 date-time, truncated to the microsecond.

    Accepts `Z`/`z` or a `+hh:mm`/`+hhmm`/`+hh` offset (no offset: UTC), a space instead of `T`, and 0-9
    fractional digits (digits past the microsecond are truncated, never rounded). Raises ValueError.
    """
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = value.strip()
    if len(text) > 10 and text[10] in " tT":
        text = f"{text[:10]}T{text[11:]}"
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    match = _FRACTION.search(text, 19) if len(text) > 19 else None
    if match is not None and match.start() == 19:
        digits = match.group(1)
        if len(digits) > 9:
            raise ValueError("more than 9 fractional digits")
        fraction = f".{(digits + '000000')[:6]}" if digits else ""
        text = text[:19] + fraction + text[match.end():]
    tail = text[19:].lstrip(".0123456789")
    if tail and tail[0] in "+-" and ":" not in tail:  # +hhmm or +hh, which 3.10's fromisoformat refuses
        digits = tail[1:]
        if not digits.isdigit() or len(digits) not in (2, 4):
            raise ValueError(f"bad UTC offset {tail!r}")
        text = text[: len(text) - len(tail)] + f"{tail[0]}{digits[:2]}:{(digits[2:] or '00')}"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_epoch_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def day_start_us(date: dt.date) -> int:
    """Microseconds since the epoch of the date's 00:00 UTC."""
    return (date - dt.date(1970, 1, 1)).days * US_PER_DAY


def utc_today(now: float) -> dt.date:
    """The UTC date of a unix time: which day "today" is for the emulated organisation."""
    return dt.datetime.fromtimestamp(now, UTC).date()
