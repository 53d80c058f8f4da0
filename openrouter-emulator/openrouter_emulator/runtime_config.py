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
from openrouter_emulator.history import MAX_HISTORY_DAYS

SHARE_SETTINGS = frozenset({"fault_rate", "hang_share", "retry_after_share", "html_error_share"})
POSITIVE_SETTINGS = frozenset({"rate_limit_window_s"})
MAXIMUM_SETTINGS = {"history_days": MAX_HISTORY_DAYS}


@dataclass(slots=True)
class RuntimeConfig:
    """The knobs tests may turn while the emulator runs (`GET`/`POST`/`DELETE /_emulator/config`).

    Every field is also a CLI flag (see `add_cli_arguments`); booleans take JSON true/false, the rest
    non-negative numbers (shares at most 1). One instance lives as long as the emulator and is changed in
    place, so the parts that hold it always read the current values.
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
    retry_after_share: float = 0.5
    html_error_share: float = 0.0
    analytics_labels: bool = True
    inclusive_end: bool = False
    history_days: int = MAX_HISTORY_DAYS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RuntimeConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

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
