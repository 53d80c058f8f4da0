"""The Broadcast receiver: an aiohttp service that journals every announced generation before it answers.

OpenRouter sends no signature, only the static headers a destination is configured with, so the one proof
of origin is a bearer token (`BROADCAST_TOKEN`), compared in constant time and never logged. Bad input gets
a 4xx naming what was wrong and is never a 5xx (OpenRouter does not retry, so a 5xx would only hide a bug
of the sender): a wrong or missing token 401, a body over `max_body_bytes` (after gzip) 413, not JSON 415
or 400, malformed spans or a value the journal cannot store exactly 400. A 2xx means durable: the ids are in
the journal (fsynced) first. The only 5xx is 503, when the journal itself cannot be written: then the writer
has stopped, `/health` answers 503 naming why, and the receiver exits (`service`) to be restarted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from usage_pipeline.broadcast.journal import JournalRefused, JournalWriter
from usage_pipeline.broadcast.spans import DeliveryError, PushedSpan, read_delivery

PATH = "/v1/traces"  # OTLP/HTTP's path for traces: the destination URL is https://<host>/v1/traces
HEALTH_PATH = "/health"
MAX_GZIP_MEMBERS = 100  # a sender's gzip has one; concatenated files a few
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceiverSettings:
    token: str | None = field(repr=False)  # None only for a receiver told it is local-only
    journal_path: Path
    max_body_bytes: int = 8 * 1024 * 1024
    drain_lag_s: float = 15.0


@dataclass
class ReceiverCounts:
    deliveries: int = 0  # accepted with at least one root span
    ids: int = 0
    connection_tests: int = 0
    empty: int = 0  # accepted, but no root span in them (child spans only)
    waiting: int = 0  # deliveries waiting for the journal's fsync now
    refused: dict[int, int] = field(default_factory=dict)  # status -> deliveries


KEY_COUNTS = web.AppKey("counts", ReceiverCounts)
KEY_WRITER = web.AppKey("writer", JournalWriter)


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    counts = request.app[KEY_COUNTS]
    counts.refused[status] = counts.refused.get(status, 0) + 1
    log.info("refused a delivery from %s: %d %s", request.remote, status, reason)
    return web.json_response({"error": reason}, status=status)


class BodyError(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """The body, unpacked if so encoded, never past `limit` bytes (a small gzip may unpack to gigabytes).

    gzip is read as RFC 1952 defines it: a series of members, all read; bytes after the last member that do
    not start one are a 400, never dropped. The receiver runs with aiohttp's auto_decompress off: its decoder
    raises from deep in the parser for a broken stream and logs it as an unhandled error, where this says 400
    with the reason."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BodyError(415, f"Content-Encoding {encoding!r:.40} is not read (gzip, deflate or none)")
    out, rest, members = bytearray(), body, 0
    while rest or not members:
        if members and (encoding == "deflate" or not rest.startswith(b"\x1f\x8b")):
            raise BodyError(400, f"the body has {len(rest):,} bytes after its last {encoding} stream")
        if members == MAX_GZIP_MEMBERS:  # each member copies the rest of the body: bound the work
            raise BodyError(400, f"the body has over {MAX_GZIP_MEMBERS} gzip members")
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        try:
            out += decoder.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BodyError(400, f"the body is not valid {encoding}: {exc}") from None
        if len(out) > limit:
            raise BodyError(413, f"the body is over {limit} bytes (after decompression)")
        if not decoder.eof:
            raise BodyError(400, f"the body is not valid {encoding}: the stream is truncated")
        rest, members = decoder.unused_data, members + 1
    return bytes(out)


def _parsed(body: bytes) -> Any:
    """The body's JSON; whatever json refuses is a DeliveryError saying why (never a 500)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeliveryError(f"the body is not JSON: {exc}") from None
    except ValueError:  # json refuses an integer of over sys.get_int_max_str_digits() digits
        raise DeliveryError(f"the body holds an integer of over {sys.get_int_max_str_digits():,} digits "
                            f"(an OTLP intValue has at most 19)") from None


def _authorized(header: str | None, expected: bytes | None) -> bool:
    if expected is None:
        return True
    return hmac.compare_digest((header or "").encode("utf-8", "surrogateescape"), expected)


async def _journal(writer: JournalWriter, spans: tuple[PushedSpan, ...]) -> None:
    loop = asyncio.get_running_loop()
    durable: asyncio.Future[None] = loop.create_future()

    def done(error: BaseException | None) -> None:
        loop.call_soon_threadsafe(_settle, durable, error)

    writer.submit(spans, time.time(), done)
    await durable


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def receiver_app(settings: ReceiverSettings, writer: JournalWriter) -> web.Application:
    """The app serving POST PATH (deliveries) and GET HEALTH_PATH (counts, no secrets) over `writer`."""
    expected = None if settings.token is None else f"Bearer {settings.token}".encode()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[KEY_COUNTS] = ReceiverCounts()
    app[KEY_WRITER] = writer

    async def deliver(request: web.Request) -> web.Response:
        if not _authorized(request.headers.get("Authorization"), expected):
            return _refuse(request, 401, "missing or wrong bearer token in the Authorization header")
        if writer.stopped is not None:  # at once: the process is exiting to be restarted
            return _refuse(request, 503, f"the journal writer stopped: {writer.stopped}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refuse(request, 413, f"the body is over {settings.max_body_bytes} bytes (after decompression)")
        except HttpProcessingError as exc:  # a broken chunked stream
            return _refuse(request, 400, f"the body cannot be read: {exc.message}")
        except ConnectionResetError:
            return _refuse(request, 400, "the sender hung up before the body ended")
        try:
            body = decoded(body, request.headers.get("Content-Encoding", ""), settings.max_body_bytes)
        except BodyError as exc:
            return _refuse(request, exc.status, str(exc))
        counts = request.app[KEY_COUNTS]
        if request.headers.get("X-Test-Connection", "").lower() == "true":
            counts.connection_tests += 1
            return web.json_response({})
        if request.content_type != "application/json":
            return _refuse(request, 415, f"only OTLP/HTTP JSON is read (Content-Type application/json), "
                                         f"got {request.content_type!r:.60}")
        try:
            delivery = read_delivery(_parsed(body))
        except RecursionError:
            return _refuse(request, 400, "the body is not JSON this receiver reads: nested too deeply")
        except DeliveryError as exc:
            return _refuse(request, 400, str(exc))
        if delivery.connection_test:
            counts.connection_tests += 1
            return web.json_response({})
        if not delivery.spans:
            counts.empty += 1
            return web.json_response({})
        counts.waiting += 1
        try:
            await _journal(writer, delivery.spans)
        except JournalRefused as exc:
            return _refuse(request, 400, str(exc))
        except Exception as exc:  # noqa: BLE001 - the journal could not be written: not the sender's fault
            return _refuse(request, 503, str(exc))
        finally:
            counts.waiting -= 1
        counts.deliveries += 1
        counts.ids += len(delivery.spans)
        return web.json_response({})

    async def health(request: web.Request) -> web.Response:
        """200 while the journal writer runs; 503 naming why once it has stopped (the process is exiting)."""
        counts = request.app[KEY_COUNTS]
        body: dict[str, Any] = {"deliveries": counts.deliveries, "ids": counts.ids,
                                "connection_tests": counts.connection_tests, "empty": counts.empty,
                                "refused": {str(k): v for k, v in sorted(counts.refused.items())},
                                "journal_commits": writer.commits, "journal_waiting": counts.waiting,
                                "journal_writer": "running" if writer.stopped is None else f"stopped: {writer.stopped}"}
        return web.json_response(body, status=200 if writer.stopped is None else 503)

    app.router.add_post(PATH, deliver)
    app.router.add_get(HEALTH_PATH, health)
    return app
