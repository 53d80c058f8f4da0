"""`usage-pipeline`: the emulator, the InfluxDB setup step, the demo (command 1), freeing dead runs, and the
usage report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _influx_setup(_: argparse.Namespace) -> int:
    from usage_pipeline.influx.settings import InfluxSettings
    from usage_pipeline.influx.store import InfluxStore

    settings = InfluxSettings.from_env()
    with InfluxStore(settings) as store:
        version = store.ping()
        store.ensure_database()
    retention = f"{settings.retention_days} days" if settings.retention_days else "forever"
    print(f"InfluxDB {version}: database {settings.database!r} ready (retention: {retention})")
    return 0


def _release_dead_runs(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance
    from dagster._core.errors import DagsterHomeNotSetError, DagsterInvariantViolationError

    from usage_pipeline.defs.dead_runs import dead_runs, format_released, release_dead_runs, runs_are_local

    try:
        instance = DagsterInstance.get()
    except (DagsterHomeNotSetError, DagsterInvariantViolationError) as exc:
        print(f"release-dead-runs: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    with instance:
        if not runs_are_local(instance):
            print("release-dead-runs: this instance does not launch runs on this host (not the DefaultRunLauncher); "
                  "its run monitoring checks run workers", file=sys.stderr)
            return 2
        if args.dry_run:
            found = dead_runs(instance)
            for dead in found:
                worker = dead.run.run_worker
                orphans = ", ".join(f"{o.pid} ({o.role})" for o in dead.orphans) or "none"
                print(f"would {dead.action} run {dead.run.run_id} ({dead.run.job_name}, {dead.run.status.value}): "
                      f"run worker pid {worker.pid if worker else 'unknown'} is gone; orphaned step workers: {orphans}")
            if not found:
                print(format_released([]))
            return 0
        print(format_released(release_dead_runs(instance)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from usage_pipeline.report import ReportError, write_report

    try:
        written = write_report(args.out, duckdb_path=args.duckdb, days=args.days)
    except ReportError as exc:
        print(f"usage-pipeline report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written.path}")
    print(written.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="usage-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    from openrouter_emulator.server import add_cli_arguments, serve_from_args

    emulator = commands.add_parser("emulator", help="serve the local OpenRouter emulator under /api/v1")
    add_cli_arguments(emulator)
    def _emulator(a: argparse.Namespace) -> int:
        serve_from_args(a)
        return 0

    emulator.set_defaults(run=_emulator)

    setup = commands.add_parser("influx-setup", help="create the InfluxDB database and retention policy (1.x)")
    setup.set_defaults(run=_influx_setup)

    demo = commands.add_parser("demo", help="run the daily_ledger job for the last few days, then the usage "
                                                   "history, and write the usage report")
    demo.add_argument("--days", type=int, default=3)
    demo.add_argument("--generations-per-day", type=int, default=2000)
    demo.add_argument("--data-dir", type=Path, default=Path("data"))

    def _demo(a: argparse.Namespace) -> int:
        from usage_pipeline.demo import run_demo

        return run_demo(days=a.days, generations_per_day=a.generations_per_day, data_dir=a.data_dir)

    demo.set_defaults(run=_demo)

    release = commands.add_parser(
        "release-dead-runs",
        help="fail runs of $DAGSTER_HOME whose worker process died (e.g. a SIGKILLed `dagster job execute`) "
             "and free the pool slots they hold")
    release.add_argument("--dry-run", action="store_true", help="only list what would be released")
    release.set_defaults(run=_release_dead_runs)

    report = commands.add_parser(
        "report", help="write the usage report: one self-contained HTML file (charts, no network) from the DuckDB file")
    report.add_argument("--days", type=int, default=365,
                        help="the last N days up to yesterday (UTC), trimmed to the stored history (default 365)")
    report.add_argument("--out", type=Path, default=Path("data/usage_report.html"), help="the HTML file to write")
    report.add_argument("--duckdb", type=Path, default=None,
                        help="the published DuckDB file (default: USAGE_DUCKDB_PATH, else data/usage.duckdb)")
    report.set_defaults(run=_report)
    args = parser.parse_args(argv)
    from usage_pipeline.settings import SettingError

    try:
        return int(args.run(args))
    except SettingError as exc:  # one line naming the variable, not a traceback
        print(f"usage-pipeline {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
