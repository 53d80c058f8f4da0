"""What a rerun of a day costs in GET /generation requests, through the real daily path (`record_day` into
a private influxd, the emulator over HTTP): a first capture, a rerun of the exact day, a rerun after a
share of its points was lost, and a refresh. Counts come from the emulator's own /_emulator/stats. No
assertions: figures for the notes.

    python -m benchmarks.rerun_cost --generations 11182
    python -m benchmarks.rerun_cost --generations 20000 --latency-ms 200 --limit 500 --lose 0.1
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.capture_throughput import emulator_args
from openrouter_emulator.process import run_emulator
from usage_pipeline.influx.local_server import run_influxd
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import DayRecording, record_day
from usage_pipeline.openrouter.settings import OpenRouterSettings
from usage_pipeline.reconcile import no_duplicates


def lose_points(store: InfluxStore, day: dt.date, share: float) -> int:
    """Delete every (1/share)-th point of the day by identity: a ledger that lost part of the day."""
    doomed = []
    for frame in store.iter_day_frames(day):
        doomed += list(zip(frame["time"], frame["model"], frame["provider"], strict=True))
    doomed = sorted(doomed)[:: max(1, round(1 / share))]
    for time_ns, model, provider in doomed:
        store.delete_point(str(model), provider, int(time_ns))
    return len(doomed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=11_182)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--limit", type=int, default=0, help="account-wide requests/s; 0: none")
    parser.add_argument("--lose", type=float, default=0.1, help="share of points deleted before the third run")
    args = parser.parse_args()
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    rows: list[tuple[str, dict[str, Any], int, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp, run_emulator(
            seed=5, generations_per_day=args.generations, days=1, log_path=Path(tmp) / "emulator.log",
            extra_args=emulator_args(args.latency_ms, args.limit, 0.1)) as emulator, \
            run_influxd(Path(tmp) / "influxd", log_path=Path(tmp) / "influxd.log") as influxd, \
            InfluxStore(InfluxSettings(url=influxd.url, database="rerun")) as store:
        store.ensure_database()
        count = emulator.truth(day)["count"]
        settings = OpenRouterSettings(api_key=emulator.management_key, base_url=emulator.base_url)

        def run(name: str, **kwargs: Any) -> DayRecording:
            emulator.reset_stats()
            started = time.monotonic()
            recording = record_day(settings, store.settings, day, **kwargs)
            gets = int(emulator.stats()["by_path"].get("/generation", 0))
            counts = store.day_counts(day)
            exact = (recording.complete and counts.points == counts.distinct_ids == count
                     and no_duplicates(store, day).passed)
            rows.append((name, recording.summary(), gets, time.monotonic() - started, "exact" if exact else
                         f"NOT EXACT: {counts}"))
            return recording

        run("first capture")
        run("rerun, day exact")
        lost = lose_points(store, day, args.lose)
        run(f"rerun, {lost} points lost")
        run("refresh", refresh=True)
    flags = " ".join(emulator_args(args.latency_ms, args.limit, 0.1))
    print(f"day {day}: {count:,} generations; emulator flags: {flags}")
    print(" | ".join(("run", "GET /generation", "of the day", "reused", "fetched", "written", "ranks kept",
                      "seconds", "result")))
    for name, summary, gets, seconds, result in rows:
        print(" | ".join(str(v) for v in (name, f"{gets:,}", f"{gets / count:.1%}", f"{summary['reused']:,}",
                                          f"{summary['fetched']:,}", f"{summary['written']:,}",
                                          f"{summary['ranks_kept']:,}", f"{seconds:.1f}", result)))


if __name__ == "__main__":
    main()
