"""The freshness policy of `influxdb/generations`, shown on its asset page: captured by
USAGE_CAPTURE_DEADLINE_UTC (default 06:00) each day.

Dagster evaluates a freshness policy per asset, not per partition: the asset is fresh when any
organisation-day was materialized between the previous midnight UTC (the day's end; the nightly run starts
at 02:00) and the deadline. The `alert_on_late_days` sensor (defs/alerts.py) judges each organisation-day
against the same deadline. (`build_time_partition_freshness_checks` would judge per partition, but only for
a plain time partitioning, not organisation x day.)
"""

import datetime as dt

from dagster import AssetSpec, FreshnessPolicy

from usage_pipeline.settings import setting


def capture_freshness(spec: AssetSpec) -> AssetSpec:
    """`spec` with the cron freshness policy of USAGE_CAPTURE_DEADLINE_UTC (read when the code location loads)."""
    at: dt.time = setting("USAGE_CAPTURE_DEADLINE_UTC")
    since_midnight = dt.timedelta(hours=at.hour, minutes=at.minute) or dt.timedelta(days=1)  # 00:00: the whole day
    return spec.replace_attributes(freshness_policy=FreshnessPolicy.cron(
        deadline_cron=f"{at.minute} {at.hour} * * *", lower_bound_delta=since_midnight, timezone="UTC"))
