"""`usage-pipeline`: the emulator, the InfluxDB setup step, the demo (command 1), one day's capture, freeing dead
runs, the Broadcast receiver, its drain and its destination, and the usage report."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

# The emulator is an optional extra of the product (`emulator` in pyproject.toml), a distribution in this
# repository and not on any package index: the install command names its path.
EMULATOR_INSTALL = "pip install ./openrouter-emulator"


def _emulator_missing(command: str) -> str:
    """The one line a command that needs the emulator prints when it is not installed."""
    hint = f"the OpenRouter emulator is not installed; from the repository root: {EMULATOR_INSTALL}"
    if command == "demo":  # it stands in for OpenRouter only when no key is set
        return f"no OPENROUTER_API_KEY is set and {hint} (or set OPENROUTER_API_KEY to use OpenRouter)"
    return hint


def _emulator(args: argparse.Namespace) -> int:
    """`usage-pipeline emulator [flags]`: the emulator's own flags, imported only for this command."""
    from openrouter_emulator.server import add_cli_arguments, serve_from_args

    parser = argparse.ArgumentParser(prog="usage-pipeline emulator",
                                     description="serve the local OpenRouter emulator under /api/v1")
    add_cli_arguments(parser)
    serve_from_args(parser.parse_args(args.emulator_argv))
    return 0


def _influx_setup(_: argparse.Namespace) -> int:
    """Every configured organisation's database: created on 1.x; on 2.x/3.x the commands that create it, then
    verified. Exit 1 while one is not ready, so a deploy step can wait on it."""
    from usage_pipeline.defs.resources import InfluxDBResource
    from usage_pipeline.influx.database_setup import setup_commands
    from usage_pipeline.influx.errors import InfluxError
    from usage_pipeline.organisations import load_organisations

    organisations, resource = load_organisations(), InfluxDBResource()
    databases, ready = list(resource.databases(organisations).values()), True
    for org in organisations.members:
        with resource.store(organisations, org.name) as store:
            settings = store.settings
            try:
                server = store.server()
                if not server.creates_databases:
                    print("\n".join(setup_commands(server, settings.database, settings.retention_days)))
                store.ensure_database(databases)
            except InfluxError as exc:
                print(f"usage-pipeline influx-setup: {org.name}: {exc}", file=sys.stderr)
                ready = False
                continue
        days = settings.retention_days
        done = "ready" if server.creates_databases else "verified: queryable through the v1 API"
        print(f"{server}: database {settings.database!r} of organisation {org.name} {done} "
              f"(retention: {f'{days} days' if days else 'forever'})")
    return 0 if ready else 1


def _home_instance(command: str) -> DagsterInstance | None:
    """$DAGSTER_HOME's instance, or None after one line naming what is wrong (DAGSTER_HOME unset, say)."""
    from dagster import DagsterInstance
    from dagster._core.errors import DagsterHomeNotSetError, DagsterInvariantViolationError

    try:
        return DagsterInstance.get()
    except (DagsterHomeNotSetError, DagsterInvariantViolationError) as exc:
        print(f"{command}: {exc}".splitlines()[0], file=sys.stderr)
        return None


def _capture(args: argparse.Namespace) -> int:
    """The daily_ledger job for one day of each organisation (or of `--org`), in this process, one after
    the other, on $DAGSTER_HOME's instance (so the UI shows the runs)."""
    instance = _home_instance("capture")  # before the definitions load: a wrong home is said alone, at once
    if instance is None:
        return 2
    from usage_pipeline.definitions import defs
    from usage_pipeline.defs.generations import REFRESH_TAG
    from usage_pipeline.defs.organisations import add_organisations
    from usage_pipeline.defs.partitions import OrgDay
    from usage_pipeline.organisations import load_organisations

    organisations = load_organisations()
    names = [organisations.get(args.org).name] if args.org else organisations.names
    failed = 0
    with instance:
        add_organisations(instance, names)
        for name in names:
            result = defs.resolve_job_def("daily_ledger").execute_in_process(
                partition_key=OrgDay(name, args.day).key, instance=instance, raise_on_error=False,
                tags={REFRESH_TAG: "true" if args.refresh else "false"})
            checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
            for check, passed in sorted(checks.items()):
                print(f"  {check}: {'passed' if passed else 'FAILED'}")
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data is not None:
                    print(f"  {event.step_key}: {event.step_failure_data.error_display_string}".splitlines()[0])
            print(f"capture {name} {args.day}: {'success' if result.success else 'FAILED'} (run {result.run_id})")
            failed += not result.success
    return 1 if failed else 0


def _release_dead_runs(args: argparse.Namespace) -> int:
    from usage_pipeline.runs.dead import dead_runs, format_released, release_dead_runs, runs_are_local

    instance = _home_instance("release-dead-runs")
    if instance is None:
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
        written = write_report(args.out, duckdb_path=args.duckdb, days=args.days, org=args.org)
    except ReportError as exc:
        print(f"usage-pipeline report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written.path}")
    print(written.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag (the docs test checks the README and docs/ against it)."""
    parser = argparse.ArgumentParser(prog="usage-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    # Its flags (and --help) are the emulator's own, parsed by `_emulator` once the optional package is imported.
    emulator = commands.add_parser("emulator", add_help=False,
                                   help="serve the local OpenRouter emulator under /api/v1 (optional: "
                                        f"{EMULATOR_INSTALL}); `usage-pipeline emulator --help` lists its flags")
    emulator.set_defaults(run=_emulator)

    setup = commands.add_parser(
        "influx-setup", help="create each organisation's InfluxDB database and retention (1.x); on 2.x/3.x "
        "print the `influx`/`influxdb3` commands that do, and verify")
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

    capture = commands.add_parser(
        "capture", help="run the daily_ledger job for one UTC day on $DAGSTER_HOME's instance, settings from the "
                        "environment; a rerun fetches only the records not already stored whole")
    capture.add_argument("day", type=dt.date.fromisoformat, help="the UTC day, YYYY-MM-DD")
    capture.add_argument("--refresh", action="store_true",
                         help="fetch every record again, even those already stored whole")
    capture.add_argument("--org", help="only this organisation (default: every one, in turn)")
    capture.set_defaults(run=_capture)

    release = commands.add_parser(
        "release-dead-runs",
        help="fail runs of $DAGSTER_HOME whose worker process died (e.g. a SIGKILLed `dagster job execute`) "
             "and free the pool slots they hold")
    release.add_argument("--dry-run", action="store_true", help="only list what would be released")
    release.set_defaults(run=_release_dead_runs)

    receive = commands.add_parser(
        "receive", help="serve the OpenRouter Broadcast webhook: journal every announced generation (durably) "
                        "before answering; needs BROADCAST_TOKEN")
    receive.add_argument("--host", default="127.0.0.1")
    receive.add_argument("--port", type=int, default=8788)
    receive.add_argument("--local-only", action="store_true",
                         help="serve without a token (only on 127.0.0.1: tests and the demo)")
    receive.add_argument("--org", help="the organisation whose Broadcast destination this is (default: the only one)")

    def _receive(a: argparse.Namespace) -> int:
        from usage_pipeline.broadcast.service import serve_receiver

        return serve_receiver(a.host, a.port, local_only=a.local_only, org=a.org)

    receive.set_defaults(run=_receive)

    drain = commands.add_parser(
        "drain", help="fetch the journaled pushed ids from GET /generation and store them in InfluxDB, as the "
                      "nightly capture would (the same points)")
    drain.add_argument("--interval", type=float, default=1.0, help="seconds between rounds when idle")
    drain.add_argument("--org", help="the organisation whose journal to drain (default: the only one)")

    def _drain(a: argparse.Namespace) -> int:
        from usage_pipeline.broadcast.service import serve_drain

        return serve_drain(a.interval, a.org)

    drain.set_defaults(run=_drain)

    broadcast_setup = commands.add_parser(
        "broadcast-setup", help="create or update the organisation's OpenRouter Broadcast destination (management "
                                "key): the receiver's URL, its bearer token (BROADCAST_TOKEN), cost and identity")
    broadcast_setup.add_argument("--url", required=True,
                                 help="the receiver's public https URL, e.g. https://usage.example.com/v1/traces")
    broadcast_setup.add_argument("--org", help="the organisation whose destination this is (default: the only one)")

    def _broadcast_setup(a: argparse.Namespace) -> int:
        from usage_pipeline.broadcast.setup import broadcast_setup

        return broadcast_setup(a.url, a.org)

    broadcast_setup.set_defaults(run=_broadcast_setup)

    report = commands.add_parser(
        "report", help="write the usage report: one self-contained HTML file (charts, no network) from the DuckDB file")
    report.add_argument("--days", type=int, default=365,
                        help="the last N days up to yesterday (UTC), trimmed to the stored history (default 365)")
    report.add_argument("--out", type=Path, default=Path("data/usage_report.html"), help="the HTML file to write")
    report.add_argument("--duckdb", type=Path, default=None,
                        help="the published DuckDB file (default: USAGE_DUCKDB_PATH, else data/usage.duckdb)")
    report.add_argument("--org", default=None,
                        help="only this organisation's usage (default: every organisation in the file, summed)")
    report.set_defaults(run=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, emulator_argv = parser.parse_known_args(argv)
    if args.command == "emulator":
        args.emulator_argv = emulator_argv
    elif emulator_argv:
        parser.error(f"unrecognized arguments: {' '.join(emulator_argv)}")
    from usage_pipeline.settings import SettingError

    try:
        return int(args.run(args))
    except SettingError as exc:  # one line naming the variable, not a traceback
        print(f"usage-pipeline {args.command}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "openrouter_emulator":
            raise
        print(f"usage-pipeline {args.command}: {_emulator_missing(args.command)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
