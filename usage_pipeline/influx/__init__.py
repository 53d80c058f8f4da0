"""The InfluxDB ledger: the `generations` point schema, the 1.x-API store, and a private influxd for tests."""

from usage_pipeline.influx.errors import InfluxError, InfluxQueryError, InfluxSetupError, InfluxWriteError
from usage_pipeline.influx.points import MEASUREMENT, point_time_ns, to_lines
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore

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
