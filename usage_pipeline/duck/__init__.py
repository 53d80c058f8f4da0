"""DuckDB daily summaries: aggregate a day of ledger points and publish them for analysts."""

from usage_pipeline.duck.publish import (
    PublishReport,
    publish,
    publisher_lock,
    replace_day,
    store_path_for,
)
from usage_pipeline.duck.summaries import (
    SUMMARY_TABLES,
    TABLE_SCHEMAS,
    CaptureStatus,
    DaySummary,
    summarize_day,
)

__all__ = [
    "SUMMARY_TABLES",
    "TABLE_SCHEMAS",
    "CaptureStatus",
    "DaySummary",
    "PublishReport",
    "publish",
    "publisher_lock",
    "replace_day",
    "store_path_for",
    "summarize_day",
]
