"""The ledger's InfluxDB access over the 1.x-compatible HTTP API (`/write`, `/query`, `/ping`).

That API is served natively by 1.x and by 2.x/3.x (database = bucket, via a DBRP mapping), so one client
covers all three. Writes are upserts (same identity overwrites), which makes every request safe to retry
on connection errors and 5xx; a 4xx means the data or the setup is wrong and must fail the caller loudly.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from usage_pipeline.influx.points import FIELD_TYPES, MEASUREMENT, TAGS, iter_line_batches
from usage_pipeline.openrouter.day import day_bounds
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline.settings import setting

log = logging.getLogger(__name__)

# Points per POST /write. Measured with benchmarks/influx_write.py (influxd 1.6.7 sharing 2 cores, write
# calls of 10,000): encoding batch k+1 during the POST of batch k at 5,000 was the fastest end to end in two
# sets of runs (34.2k and 39.8k points/s), ahead of encoding first then POSTing 5,000s (31.7k, 39.3k) or one
# 10,000 (32.1k, 37.1k), and of overlapping at 2,500 (32.9k, 37.1k). Bodies are not gzipped: on loopback
# gzip (level 1) cost the client ~2.5 µs a point and influxd no less CPU (22-25 µs a point either way).
WRITE_BATCH_SIZE = 5000
RETENTION_POLICY = "autogen"  # data already lives here; switching the default RP would hide it
_RETRY_STATUSES = (500, 502, 503, 504)
_DTYPES: dict[type, str] = {float: "float64", int: "Int64", bool: "boolean", str: "string"}
FRAME_COLUMNS: tuple[str, ...] = ("time", *TAGS, *FIELD_TYPES)


class InfluxError(RuntimeError):
    """Base of this module's errors; messages never contain the token or password."""


class InfluxWriteError(InfluxError):
    """A write the server rejected or never answered: the batch must be retried by the caller."""

    def __init__(
        self, message: str, *, status: int | None, database: str, batch_size: int, server_text: str
    ) -> None:
        super().__init__(message)
        self.status = status
        self.database = database
        self.batch_size = batch_size
        self.server_text = server_text


class InfluxQueryError(InfluxError):
    """An InfluxQL statement failed; the message carries the server's error text."""


class InfluxSetupError(InfluxError):
    """The database/bucket is missing or not reachable through the 1.x API; the message says how to fix it."""


@dataclass(frozen=True)
class InfluxSettings:
    """Where and how to reach InfluxDB; secrets are excluded from repr so they never reach logs."""

    url: str
    database: str = "openrouter"
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    retention_days: int | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_url(cls, url: str, *, database: str = "openrouter", token: str | None = None,
                 username: str | None = None, password: str | None = None, retention_days: int | None = None,
                 timeout_s: float = 30.0) -> InfluxSettings:
        """Settings for `url`; credentials written into it (`http://user:pw@host`) move to username/password,
        so the URL that is logged and put in error messages never carries them."""
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            username = username or unquote(parts.username or "") or None
            password = password or unquote(parts.password or "") or None
            host = parts.hostname or ""
            netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(parts._replace(netloc=netloc))
        return cls(url=url.rstrip("/"), database=database, token=token, username=username, password=password,
                   retention_days=retention_days, timeout_s=timeout_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InfluxSettings:
        """INFLUXDB_URL (required), _DATABASE, _TOKEN, _USERNAME, _PASSWORD, _RETENTION_DAYS, _TIMEOUT_S."""
        def read(name: str) -> Any:
            return setting(name, environ)

        return cls.from_url(read("INFLUXDB_URL"), database=read("INFLUXDB_DATABASE"), token=read("INFLUXDB_TOKEN"),
                            username=read("INFLUXDB_USERNAME"), password=read("INFLUXDB_PASSWORD"),
                            retention_days=read("INFLUXDB_RETENTION_DAYS"), timeout_s=read("INFLUXDB_TIMEOUT_S"))


@dataclass
class WriteResult:
    """Points written, and generations refused by id with the reason (never altered to fit)."""

    written: int = 0
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DayCounts:
    """Points vs distinct generation ids in one UTC day: equal iff the day has no duplicate."""

    points: int
    distinct_ids: int


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def time_literals(day: dt.date) -> tuple[str, str]:
    """The day's bounds (`day_bounds`: [00:00, next 00:00) UTC) as InfluxQL RFC 3339 literals."""
    start, end = day_bounds(day)
    return quote_literal(start.strftime("%Y-%m-%dT%H:%M:%SZ")), quote_literal(end.strftime("%Y-%m-%dT%H:%M:%SZ"))


def major_version(version: str) -> int | None:
    """Major version from X-Influxdb-Version ("1.6.7~rc0", "v2.7.4", "3.0.1"); None if unparsable."""
    head = version.strip().lstrip("vV").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _make_session(settings: InfluxSettings) -> requests.Session:
    retry = Retry(
        total=5,
        connect=5,
        read=3,
        status=5,
        backoff_factor=0.5,
        status_forcelist=_RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),  # POSTs are idempotent upserts/queries here
        raise_on_status=False,  # hand back the last 5xx so its error text reaches the caller
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if settings.token:
        session.headers["Authorization"] = f"Token {settings.token}"
    elif settings.username is not None:
        # A header rather than u/p params: credentials never appear in a URL, a log line or an exception.
        session.auth = (settings.username, settings.password or "")
    return session


def _server_text(response: requests.Response) -> str:
    try:
        payload = response.json()
        if isinstance(payload, dict):  # 1.x and 3.x say {"error": ...}; 2.x says {"code": ..., "message": ...}
            if payload.get("error"):
                return str(payload["error"])
            if payload.get("message"):
                return f"{payload.get('code', 'error')}: {payload['message']}"
    except ValueError:
        pass
    return response.headers.get("X-Influxdb-Error") or response.text[:500] or response.reason or ""


def _result_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict) or not isinstance(payload.get("results", []), list):
        return [f"unexpected response: {str(payload)[:200]}"]
    errors = [str(payload["error"])] if payload.get("error") else []
    errors += [str(result["error"]) for result in payload.get("results") or [] if result.get("error")]
    return errors


def series_frame(series: Mapping[str, Any]) -> pd.DataFrame:
    """One /query series as a DataFrame with every schema column and a stable dtype per column."""
    frame = pd.DataFrame(series.get("values") or [], columns=series["columns"])
    extra = [column for column in frame.columns if column not in FRAME_COLUMNS]
    frame = frame.reindex(columns=[*FRAME_COLUMNS, *extra])
    frame["time"] = frame["time"].astype("int64")
    for tag in TAGS:
        frame[tag] = frame[tag].astype("string")
    for name, kind in FIELD_TYPES.items():
        frame[name] = frame[name].astype(_DTYPES[kind])
    return frame


class InfluxStore:
    """The `generations` ledger in one database, through the 1.x-compatible HTTP API."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._url = settings.url.rstrip("/")
        self._session = _make_session(settings)

    def __enter__(self) -> InfluxStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def _redact(self, text: str) -> str:
        """Belt and braces: a server or library could echo a credential back."""
        for secret in (self.settings.token, self.settings.password):
            if secret:
                text = text.replace(secret, "***")
        return text

    # ---- server -------------------------------------------------------------------------------

    def ping(self) -> str:
        """The server version (X-Influxdb-Version), proving it is up and speaks the 1.x API."""
        try:
            response = self._session.get(f"{self._url}/ping", timeout=self.settings.timeout_s)
        except requests.RequestException as exc:
            raise InfluxError(self._redact(f"InfluxDB at {self._url} is unreachable: {exc}")) from None
        if not response.ok:
            raise InfluxError(self._redact(f"ping {self._url}: HTTP {response.status_code} {_server_text(response)}"))
        return response.headers.get("X-Influxdb-Version", "unknown")

    def ensure_database(self) -> None:
        """Make the database ready to write; on 1.x create it and its retention, elsewhere only verify."""
        version = self.ping()
        if major_version(version) == 1:
            self._ensure_v1_database()
        else:
            self._verify_queryable(version)

    def _ensure_v1_database(self) -> None:
        days = self.settings.retention_days or 0
        if days < 0:
            raise ValueError(f"retention_days must be >= 0 (0 or None = keep forever), got {days}")
        db = quote_ident(self.settings.database)
        self.query(f"CREATE DATABASE {db}")  # a no-op when it exists
        existing = {row[0] for series in self.query(f"SHOW RETENTION POLICIES ON {db}") for row in series["values"]}
        verb = "ALTER" if RETENTION_POLICY in existing else "CREATE"
        duration = f"{days}d" if days else "INF"
        # 1.x's own defaults; stated explicitly because ALTER keeps the old shard duration otherwise.
        shard = "1h" if 0 < days < 2 else "1d" if 0 < days < 180 else "7d"
        self.query(
            f"{verb} RETENTION POLICY {quote_ident(RETENTION_POLICY)} ON {db} "
            f"DURATION {duration} REPLICATION 1 SHARD DURATION {shard} DEFAULT"
        )

    def _verify_queryable(self, version: str) -> None:
        if self.settings.retention_days:
            log.warning("retention_days is ignored on InfluxDB %s: set the bucket's retention instead", version)
        try:
            self.query("SHOW MEASUREMENTS LIMIT 1")
        except InfluxQueryError as exc:
            db = self.settings.database
            raise InfluxSetupError(
                f"InfluxDB {version}: database {db!r} is not queryable through the 1.x API ({exc}). "
                f"On 2.x create a bucket and map it: `influx bucket create -n {db}` then "
                f"`influx v1 dbrp create --db {db} --rp autogen --bucket-id <bucket id> --default`, "
                "and use a token with read/write access to it. On 3.x the database must exist "
                f"(`influxdb3 create database {db}`) and the token must be allowed to use it."
            ) from exc

    # ---- writes -------------------------------------------------------------------------------

    def write_generations(self, generations: Sequence[Generation],
                          batch_size: int = WRITE_BATCH_SIZE) -> WriteResult:
        """Upsert a complete window of generations: what was written, and what was refused by id.

        A generation that line protocol cannot carry, or that the server refuses (a 4xx naming its line,
        found by splitting the batch: every write is an upsert, so resending is harmless), is refused by id
        with the reason and the rest is written. A server that does not answer, or answers 5xx, raises
        InfluxWriteError: nothing can be known about the batch.

        Batch k+1 is encoded while batch k is POSTed by one background thread, so at most one request is
        in flight and one more batch is held.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        result = WriteResult()

        def settle(posted: Future[dict[str, str]], size: int) -> None:
            refused = posted.result()
            result.refused.update(refused)
            result.written += size - len(refused)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-write") as poster:
            in_flight: tuple[Future[dict[str, str]], int] | None = None
            for batch in iter_line_batches(generations, batch_size):  # encodes while the previous one posts
                result.refused.update(batch.refused)
                if in_flight is not None:
                    settle(*in_flight)
                in_flight = (poster.submit(self._write_isolating, batch.lines, batch.ids), len(batch.lines))
            if in_flight is not None:
                settle(*in_flight)
        return result

    def _write_isolating(self, lines: list[str], ids: list[str]) -> dict[str, str]:
        """Write `lines`; if the server refuses some, find them by halving and return their ids -> reason."""
        try:
            self.write_lines(lines)
            return {}
        except InfluxWriteError as exc:
            if exc.status is None or exc.status >= 500 or exc.status in (401, 403, 404):
                raise
            if len(lines) == 1:
                return {ids[0]: f"InfluxDB refused its point: HTTP {exc.status}: {exc.server_text[:300]}"}
        middle = len(lines) // 2
        return {**self._write_isolating(lines[:middle], ids[:middle]),
                **self._write_isolating(lines[middle:], ids[middle:])}

    def write_lines(self, lines: Sequence[str]) -> None:
        """POST line protocol (ns precision) as one request; raise InfluxWriteError unless 2xx."""
        if not lines:
            return
        db = self.settings.database
        try:
            response = self._session.post(
                f"{self._url}/write",
                params={"db": db, "precision": "ns"},
                data="\n".join(lines).encode("utf-8"),
                timeout=self.settings.timeout_s,
            )
        except requests.RequestException as exc:
            text = self._redact(str(exc))
            raise InfluxWriteError(
                f"write of {len(lines)} points to database {db!r} got no response: {text}",
                status=None, database=db, batch_size=len(lines), server_text=text,
            ) from exc
        if not response.ok:
            text = self._redact(_server_text(response))
            raise InfluxWriteError(
                f"write of {len(lines)} points to database {db!r} failed: HTTP {response.status_code}: {text}",
                status=response.status_code, database=db, batch_size=len(lines), server_text=text,
            )

    def delete_point(self, model: str, provider: str | pd.api.typing.NAType | None, time_ns: int) -> None:
        """Delete the one point with this identity (1.x only; `provider = ''` matches an absent tag).

        A missing provider may arrive as None or as a frame's <NA>: anything but a non-empty str is absent.
        """
        provider_value = provider if isinstance(provider, str) else ""
        self.query(
            f"DELETE FROM {quote_ident(MEASUREMENT)} WHERE {quote_ident('model')} = {quote_literal(model)} "
            f"AND {quote_ident('provider')} = {quote_literal(provider_value)} AND time = {int(time_ns)}"
        )

    # ---- queries ------------------------------------------------------------------------------

    def _post_query(self, influxql: str, params: Mapping[str, str], stream: bool = False) -> requests.Response:
        try:
            response = self._session.post(
                f"{self._url}/query",
                params={"db": self.settings.database, "epoch": "ns", **params},
                data={"q": influxql},  # in the body: no URL length limit, statement kept out of access logs
                timeout=self.settings.timeout_s,
                stream=stream,
            )
        except requests.RequestException as exc:
            raise InfluxQueryError(self._redact(f"query to {self._url} got no response: {exc}")) from None
        if not response.ok:
            text = self._redact(_server_text(response))
            response.close()
            raise InfluxQueryError(f"query failed: HTTP {response.status_code}: {text} (query: {influxql[:300]})")
        return response

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the first statement's series (empty when it has none)."""
        response = self._post_query(influxql, {})
        try:
            payload = response.json()
        except ValueError as exc:
            text = self._redact(response.text[:200])
            raise InfluxQueryError(f"query returned non-JSON: {text!r} (query: {influxql[:300]})") from exc
        errors = _result_errors(payload)
        if errors:
            raise InfluxQueryError(self._redact(f"query failed: {'; '.join(errors)} (query: {influxql[:300]})"))
        results = payload.get("results") or []
        return list(results[0].get("series") or []) if results else []

    def _day_where(self, day: dt.date) -> str:
        start, end = time_literals(day)
        return f"FROM {quote_ident(MEASUREMENT)} WHERE time >= {start} AND time < {end}"

    def day_counts(self, day: dt.date) -> DayCounts:
        """Points and distinct generation ids in the UTC day."""
        gid = quote_ident("generation_id")
        series = self.query(f"SELECT COUNT({gid}) AS points, COUNT(DISTINCT({gid})) AS ids {self._day_where(day)}")
        if not series:
            return DayCounts(points=0, distinct_ids=0)
        row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=False))
        return DayCounts(points=int(row["points"] or 0), distinct_ids=int(row["ids"] or 0))

    def _per_model(self, aggregate: str, day: dt.date) -> dict[str, Any]:
        series = self.query(f"SELECT {aggregate} AS v {self._day_where(day)} GROUP BY {quote_ident('model')}")
        return {s["tags"]["model"]: s["values"][0][s["columns"].index("v")] for s in series}

    def ids_by_model(self, day: dt.date) -> dict[str, int]:
        """Distinct generation ids per model in the UTC day."""
        per_model = self._per_model(f"COUNT(DISTINCT({quote_ident('generation_id')}))", day)
        return {model: int(value or 0) for model, value in per_model.items()}

    def cost_by_model(self, day: dt.date) -> dict[str, float]:
        """SUM(total_cost) per model in the UTC day."""
        per_model = self._per_model(f"SUM({quote_ident('total_cost')})", day)
        return {model: float(value or 0.0) for model, value in per_model.items()}

    def usage_by_model(self, day: dt.date) -> dict[str, float]:
        """SUM(usage) per model in the UTC day (credits charged, which OpenRouter's analytics report)."""
        per_model = self._per_model(f"SUM({quote_ident('usage')})", day)
        return {model: float(value or 0.0) for model, value in per_model.items()}

    def iter_day_frames(self, day: dt.date, chunk_size: int = 10000) -> Iterator[pd.DataFrame]:
        """Stream the day's points, one DataFrame per server chunk, so memory is bounded by chunk_size."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        influxql = f"SELECT * {self._day_where(day)}"
        params = {"chunked": "true", "chunk_size": str(chunk_size)}
        with self._post_query(influxql, params, stream=True) as response:
            # Chunked responses are newline-delimited JSON documents, one per chunk.
            for line in response.iter_lines(chunk_size=1 << 16):
                if not line:
                    continue
                payload = json.loads(line)
                errors = _result_errors(payload)
                if errors:
                    raise InfluxQueryError(self._redact(f"chunked query failed: {'; '.join(errors)}"))
                for result in payload.get("results") or []:
                    for series in result.get("series") or []:
                        yield series_frame(series)
