"""The InfluxDB ledger: the `generations` point schema, the 1.x-API store, and a private influxd for tests."""

from usage_pipeline.influx.points import MEASUREMENT, point_time_ns, to_lines
from usage_pipeline.influx.store import (
    DayCounts,
    InfluxError,
    InfluxQueryError,
    InfluxSettings,
    InfluxSetupError,
    InfluxStore,
    InfluxWriteError,
)

__all__ = [
    "MEASUREMENT",
    "DayCounts",
    "InfluxError",
    "InfluxQueryError",
    "InfluxSettings",
    "InfluxSetupError",
    "InfluxStore",
    "InfluxWriteError",
    "point_time_ns",
    "to_lines",
]
