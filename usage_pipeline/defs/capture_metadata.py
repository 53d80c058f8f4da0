"""What a capture's materialization of `influxdb/generations` carries: the few numbers an operator charts across
organisation-days (the asset page's Plots tab draws one chart per numeric entry, so each number here is a chart),
the organisation, day and database by name, and everything else the capture measured as one JSON entry,
`details`, which the UI shows but never plots.

Charted, in this order: `enumerated` (the day's records), `fetched`, `reused`, `spend_usd` (the day's stored
usage, USD), `records_per_second` and `share_of_limit` (that rate over the request limit the run met) and
`fetch_p99_ms` (these three only when the run fetched records: a rerun that reuses the day has no rate),
`missing`, `refused` (records the ledger would not store: invalid values, or refused by InfluxDB), and
`push_coverage` only for a day push delivered (`broadcast.coverage.push_coverage`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import MetadataValue

from usage_pipeline.broadcast.coverage import push_coverage
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import DayRecording

PLOTTED = ("enumerated", "fetched", "reused", "spend_usd", "records_per_second", "share_of_limit", "fetch_p99_ms",
           "missing", "refused", "push_coverage")  # every number the materialization may carry


def capture_metadata(org: str, database: str, recording: DayRecording, store: InfluxStore,
                     journal_path: Path) -> dict[str, Any]:
    """The materialization's entries for the organisation's captured (or partly captured) day."""
    day, recorded, pace = recording.day, recording.recorded, recording.fetcher.source.pace
    limit = pace.limit_rps
    plotted: dict[str, int | float] = {
        "enumerated": recording.listing.ids_enumerated, "fetched": recorded.fetched, "reused": recorded.reused,
        "spend_usd": round(sum(store.usage_by_model(day).values()), 6),  # one aggregate query of what is stored
    }
    if recorded.fetched:
        plotted["records_per_second"] = round(recording.records_per_second, 1)
        if limit:
            plotted["share_of_limit"] = round(recording.records_per_second / limit, 3)
        plotted["fetch_p99_ms"] = pace.percentile_ms(0.99)
    plotted |= {"missing": len(recorded.missing), "refused": len(recorded.refused) + len(recorded.invalid)}
    details: dict[str, Any] = {**recording.summary(), "limit_rps": round(limit, 1) if limit else None}
    pushed = push_coverage(journal_path, day, lambda: store.day_ids(day))
    if pushed:
        plotted["push_coverage"] = pushed["push_coverage"]
        details["push"] = pushed
    return {"organisation": org, "day": day.isoformat(), "influxdb_database": database, **plotted,
            "details": MetadataValue.json(details)}


def as_log_line(metadata: Mapping[str, Any]) -> str:
    """The entries as one line of JSON for the run log (details included)."""
    return json.dumps({name: getattr(value, "value", value) for name, value in metadata.items()}, default=str)
