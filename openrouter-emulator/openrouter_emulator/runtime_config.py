"""The settings tests may change while the emulator runs, and what each accepts.

They start as the CLI flags' values (`cli_arguments`) and change through `POST /_emulator/config`; the
checks live beside the fields so a bad value is refused the same way whichever way it arrives.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from openrouter_emulator.analytics import MAX_ANALYTICS_ROWS
from openrouter_emulator.faults import RANDOM_FAULT_STATUSES
from openrouter_emulator.history import MAX_HISTORY_DAYS
from openrouter_emulator.limiters import FIXED, LIMITER_KINDS
from openrouter_emulator.live_shapes import LIVE, SHAPES

SHARE_SETTINGS = frozenset({"fault_rate", "hang_share", "retry_after_share", "html_error_share", "throttle_share",
                            "first_404_share"})
POSITIVE_SETTINGS = frozenset({"rate_limit_window_s"})
MAXIMUM_SETTINGS = {"history_days": MAX_HISTORY_DAYS}
# Settings that take one of a few words.
CHOICE_SETTINGS: dict[str, tuple[str, ...]] = {"shapes": SHAPES, "rate_limiter": LIMITER_KINDS}


@dataclass(slots=True)
class RuntimeConfig:
    """The knobs tests may turn while the emulator runs (`GET`/`POST`/`DELETE /_emulator/config`).

    Every field is also a CLI flag (see `add_cli_arguments`); booleans take JSON true/false, `shapes` "live"
    or "spec", `rate_limiter` "fixed", "token-bucket" or "sliding", `fault_statuses` a list of HTTP error
    statuses (or the flag's "500,503"), the rest non-negative numbers (shares at most 1). One instance lives
    as long as the emulator and is changed in place, so the parts that hold it always read the current values.
    """

    analytics_max_rows: int = MAX_ANALYTICS_ROWS
    analytics_rpm: int = 64
    fresh_404_seconds: float = 5.0
    generation_404_first: int = 0
    fault_rate: float = 0.0
    latency_median_ms: float = 0.0
    latency_sigma: float = 0.6
    analytics_ms_per_1k_rows: float = 0.0
    hang_share: float = 0.0
    hang_seconds: float = 60.0
    rate_limit_rps: float = 0.0
    rate_limit_window_s: float = 1.0
    rate_limiter: str = FIXED  # fixed windows, token-bucket or sliding (log); posting it starts the limiter afresh
    retry_after_share: float = 0.5
    html_error_share: float = 0.0
    analytics_labels: bool = True
    inclusive_end: bool = False
    history_days: int = MAX_HISTORY_DAYS
    throttle_share: float = 0.0
    fault_statuses: tuple[int, ...] = RANDOM_FAULT_STATUSES
    first_404_share: float = 0.0
    shapes: str = LIVE  # live: answers shaped like the live API's bodies; spec: like the spec's examples

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RuntimeConfig:
        """The flags' values; a namespace from an older caller's parser may lack the newer ones (defaults)."""
        defaults = cls()
        return cls(**{f.name: getattr(args, f.name, getattr(defaults, f.name)) for f in fields(cls)})

    def update(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Set every setting or none (ValueError saying why); returns the checked values that were set."""
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        unknown = set(settings) - set(kinds)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}; known: {sorted(kinds)}")
        checked = {name: check_setting(name, value, kinds[name]) for name, value in settings.items()}
        for name, value in checked.items():  # all or nothing: set only once every value is valid
            setattr(self, name, value)
        self.analytics_max_rows = max(1, self.analytics_max_rows)
        return checked


def check_setting(name: str, value: Any, kind: type) -> Any:
    """The value converted to the setting's type, or ValueError saying what the setting accepts."""
    if kind is tuple:
        return parse_statuses(value, name)
    if name in CHOICE_SETTINGS:
        if value not in CHOICE_SETTINGS[name]:
            raise ValueError(f"{name} must be one of {', '.join(CHOICE_SETTINGS[name])}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if name in SHARE_SETTINGS and value > 1:
        raise ValueError(f"{name} must be a share from 0 to 1")
    if name in POSITIVE_SETTINGS and value <= 0:
        raise ValueError(f"{name} must be positive")
    if name in MAXIMUM_SETTINGS and value > MAXIMUM_SETTINGS[name]:
        raise ValueError(f"{name} must be at most {MAXIMUM_SETTINGS[name]}")
    return kind(value)


def parse_statuses(value: Any, name: str = "fault_statuses") -> tuple[int, ...]:
    """HTTP error statuses from a JSON list of integers or a comma-separated string ("500,503")."""
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",") if p.strip()]
        try:
            items = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated HTTP statuses, got {value!r}") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        items = list(value)
    else:
        raise ValueError(f"{name} must be a list of HTTP statuses or a comma-separated string")
    if not items or not all(400 <= v <= 599 for v in items):
        raise ValueError(f"{name} must name at least one HTTP error status from 400 to 599")
    return tuple(items)
