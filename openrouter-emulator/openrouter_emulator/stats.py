"""The counters behind `GET|DELETE /_emulator/stats`: what the `/api/v1` side answered, how fast, how hostile.

Load tests and hostile-behaviour tests read them to prove what the server did (peak rate, 429s, CDN
pages, hangs, connections in flight, how long each answer was held back: `GET /_emulator/delays`) rather
than infer it from what a client saw or how long it waited.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

DELAY_LOG_SIZE = 10_000  # answers whose delay `delays()` keeps, the latest


class Stats:
    """Counters of the `/api/v1` answers since start or the last reset; only the event loop touches them.

    `clock` (monotonic seconds) is injectable so the rates and the peak can be tested without waiting."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.started = self._clock()
        self._delays: deque[tuple[str, int, float]] = deque(maxlen=DELAY_LOG_SIZE)
        self.by_path: dict[str, dict[str, int]] = {}
        self.rate_limited = self.html_errors = self.hangs = 0
        self.throttled = 0  # lone 429s (`throttle_share`), apart from the account limiter's `rate_limited`
        self.random_faults = 0  # statuses drawn by `fault_rate` from `fault_statuses`
        self.first_404s = 0  # first GETs of lagging ids answered 404 (`first_404_share`)
        self.max_in_flight = self.in_flight
        self._bucket = 0  # whole seconds since `started` of the bucket being counted
        self._bucket_count = 0
        self._peak = 0

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def answered(self, path: str, status: int, delay_s: float = 0.0) -> None:
        """One answer, and the seconds the emulator deliberately held it (latency, faults' delays, hangs)."""
        by_status = self.by_path.setdefault(path, {})
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1
        self._delays.append((path, status, delay_s))
        bucket = int(self._clock() - self.started)
        if bucket != self._bucket:
            self._peak = max(self._peak, self._bucket_count)
            self._bucket, self._bucket_count = bucket, 0
        self._bucket_count += 1

    def delays(self) -> dict[str, Any]:
        """The delay of each of the latest DELAY_LOG_SIZE answers, in the order they were answered."""
        return {"delays": [{"path": path, "status": status, "delay_ms": round(delay_s * 1000, 3)}
                           for path, status, delay_s in self._delays]}

    def snapshot(self) -> dict[str, Any]:
        elapsed = self._clock() - self.started
        peak = self._peak
        if self._bucket < int(elapsed):  # the bucket last counted into has ended: it is whole
            peak = max(peak, self._bucket_count)
        by_path = {p: dict(s) for p, s in self.by_path.items()}
        by_status: dict[str, int] = {}
        for statuses in by_path.values():
            for status, n in statuses.items():
                by_status[status] = by_status.get(status, 0) + n
        total = sum(by_status.values())
        ok = sum(n for status, n in by_status.items() if status.startswith("2"))

        def per_second(n: int) -> float:
            return round(n / elapsed, 3) if elapsed > 0 else 0.0

        return {
            "total": total, "by_path": {p: sum(s.values()) for p, s in by_path.items()}, "by_status": by_status,
            "by_path_status": by_path, "elapsed_s": round(elapsed, 3), "served_per_second": per_second(total),
            "ok_per_second": per_second(ok), "peak_served_per_second": peak, "rate_limited": self.rate_limited,
            "html_errors": self.html_errors, "hangs": self.hangs, "throttled": self.throttled,
            "random_faults": self.random_faults, "first_404s": self.first_404s, "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }
