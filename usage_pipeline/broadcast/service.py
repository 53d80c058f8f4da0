"""The two push processes as commands: `usage-pipeline receive` (the webhook) and `usage-pipeline drain`.

Apart, so the receiver's answers never wait for the drain's fetching (one GIL each), and either can be
restarted alone: the journal between them is durable, and the drain redoes what it had in flight.
Settings come from the environment, read here once when the command starts (`usage_pipeline.settings`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from usage_pipeline.broadcast import journal
from usage_pipeline.broadcast.drain import DrainReport, drain
from usage_pipeline.broadcast.journal import JournalWriter
from usage_pipeline.broadcast.receiver import PATH, ReceiverSettings, receiver_app
from usage_pipeline.day_lock import DayLockError, DayLocks
from usage_pipeline.influx.errors import InfluxError
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.organisations import Organisation, journal_path_for, load_organisations
from usage_pipeline.settings import SettingError, setting

LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")
# On SIGTERM, deliveries in flight get this long to be answered (a commit waits at most journal.WRITER_BUSY_S
# for a lock), so the receiver exits within 5 s.
SHUTDOWN_S = 3.0


def journal_of(org_name: str | None) -> tuple[Organisation, Path]:
    """The organisation a push process serves (`--org`, or the only one) and its own journal: each
    organisation's Broadcast destination has a receiver and a drain of its own."""
    org = load_organisations().pick(org_name)
    return org, journal_path_for(Path(setting("BROADCAST_JOURNAL_PATH")), org)


def receiver_settings(*, local_only: bool, host: str, org: str | None = None) -> ReceiverSettings:
    """From the environment; no token is refused unless the receiver is told it is local-only (and is)."""
    token = setting("BROADCAST_TOKEN")
    if token is None and not local_only:
        raise SettingError("BROADCAST_TOKEN is not set: the receiver needs a bearer token (or --local-only, "
                           "for a receiver on 127.0.0.1 that nothing else can reach)")
    if local_only and host not in LOCAL_HOSTS:
        raise SettingError(f"--local-only serves without a token only on 127.0.0.1, not on {host!r}")
    _, journal_path = journal_of(org)
    return ReceiverSettings(token=token, journal_path=journal_path,
                            max_body_bytes=setting("BROADCAST_MAX_BODY_BYTES"),
                            drain_lag_s=setting("BROADCAST_DRAIN_LAG_S"))


def serve_receiver(host: str, port: int, *, local_only: bool = False, org: str | None = None) -> int:
    """Serve until SIGTERM (0), or until the journal writer stops (1, one line naming why on stderr): a receiver
    that cannot journal exits so its supervisor restarts it, rather than answering 503 unseen for ever."""
    settings = receiver_settings(local_only=local_only, host=host, org=org)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopped = asyncio.run(_receive(settings, host, port))
    if stopped is not None:
        print(f"usage-pipeline receive: the journal writer stopped ({stopped}); exiting to be restarted",
              file=sys.stderr)
        return 1
    return 0


async def _receive(settings: ReceiverSettings, host: str, port: int) -> str | None:
    """Serve until a signal or the writer's stop sets `stop` (either, any number of times); then stop listening,
    answer what is in flight (SHUTDOWN_S at most) and close the journal. Why the writer stopped, if it did."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    writer = JournalWriter(settings.journal_path, settings.drain_lag_s,
                           on_stop=lambda _: loop.call_soon_threadsafe(stop.set))
    runner = web.AppRunner(receiver_app(settings, writer), access_log=None, shutdown_timeout=SHUTDOWN_S,
                           auto_decompress=False)  # `receiver.decoded` unpacks, within the size limit
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        auth = "no token (local only)" if settings.token is None else "bearer token required"
        print(f"receiving Broadcast deliveries at http://{host}:{port}{PATH} ({auth}); journal "
              f"{settings.journal_path}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(writer.close)
    return writer.stopped


def serve_drain(interval_s: float = 1.0, org_name: str | None = None) -> int:
    """Drain the organisation's journal into its database until SIGTERM or SIGINT; one line per round that had
    ids due."""
    from usage_pipeline.defs.resources import InfluxDBResource, OpenRouterResource

    org, journal_path = journal_of(org_name)
    openrouter = OpenRouterResource().settings(org)
    organisations, resource = load_organisations(), InfluxDBResource()
    influx, databases = resource.settings(organisations, org.name), list(resource.databases(organisations).values())
    locks, retention_days = DayLocks.beside(journal_path, org.name), setting("BROADCAST_JOURNAL_RETENTION_DAYS")
    connection = journal.connect(journal_path)

    def said(report: DrainReport) -> None:
        if report.due:
            print(f"drained {report.due} due: {report.fetched} fetched, {report.reused} stored already, "
                  f"{report.written} written, {report.differs} differing from their span, "
                  f"{len(report.postponed)} due again later, {len(report.deferred)} waiting for their day"
                  + (f" ({next(iter(report.deferred.values()))})" if report.deferred else ""), flush=True)
        if report.pruned:
            print(f"pruned {report.pruned} drained ids of proven days older than {retention_days} days",
                  flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await drain(openrouter, influx, connection, stop, interval_s, on_round=said, locks=locks,
                    retention_days=retention_days)

    print(f"draining {journal_path} into InfluxDB database {influx.database!r} ({org.name})", flush=True)
    try:
        with InfluxStore(influx) as store:
            store.ensure_database(databases)
    except InfluxError as exc:  # unreachable, or a database the server cannot hold: one line, exit 1
        print(f"usage-pipeline drain: {exc}", file=sys.stderr)
        connection.close()
        return 1
    try:
        asyncio.run(run())
    except DayLockError as exc:  # PostgreSQL unreachable: one line, and the supervisor restarts the drain
        print(f"usage-pipeline drain: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print("drain stopped", file=sys.stderr)
    return 0
