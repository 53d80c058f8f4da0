"""The InfluxDB ledger against a real, private influxd: upserts, ranks, duplicates, errors, streaming."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from usage_pipeline.influx.errors import InfluxQueryError, InfluxSetupError, InfluxWriteError
from usage_pipeline.influx.influxql import time_literals
from usage_pipeline.influx.local_server import LocalInfluxd, render_config, run_influxd
from usage_pipeline.influx.points import FIELD_TYPES, MEASUREMENT, point_time_ns, to_line
from usage_pipeline.influx.ranks import place
from usage_pipeline.influx.reads import DayCounts
from usage_pipeline.influx.settings import InfluxSettings
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.openrouter.generation import Generation
from usage_pipeline_tests.scripted_http import scripted_server

UTC = dt.UTC
DAY = dt.date(2025, 3, 10)
SECRET_TOKEN = "tok-SECRET-5f1c9e"
SECRET_PASSWORD = "pw-SECRET-77a0b2"


def gen(
    gen_id: str,
    created_at: dt.datetime,
    model: str = "openai/gpt-4o",
    provider: str | None = "OpenAI",
    **overrides: Any,
) -> Generation:
    """A realistic Generation; tests override only what they are about."""
    values: dict[str, Any] = dict(
        id=gen_id,
        created_at=created_at,
        model=model,
        provider_name=provider,
        api_key="key-1",
        total_cost=0.00123,
        usage=0.00123,
        upstream_inference_cost=None,
        cache_discount=None,
        tokens_prompt=120,
        tokens_completion=30,
        native_tokens_prompt=118,
        native_tokens_completion=31,
        native_tokens_reasoning=0,
        native_tokens_cached=None,
        latency=812.0,
        generation_time=640.0,
        moderation_latency=None,
        finish_reason="stop",
        native_finish_reason="stop",
        streamed=True,
        cancelled=False,
        is_byok=False,
        api_type="completions",
        app_id=None,
        origin="https://example.test",
        external_user=None,
        request_id=f"req-{gen_id}",
        session_id=None,
        upstream_id=None,
    )
    values.update(overrides)
    return Generation(**values)


def at(day: dt.date, hour: int = 12, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=UTC)


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfluxd]:
    with run_influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server


def _new_store(influxd: LocalInfluxd, **settings: Any) -> InfluxStore:
    database = settings.pop("database", f"ledger_{uuid.uuid4().hex[:10]}")
    return InfluxStore(InfluxSettings(url=influxd.url, database=database, **settings))


def times_to_ids(store: InfluxStore, day: dt.date) -> dict[int, str]:
    start, end = time_literals(day)
    series = store.query(f'SELECT "generation_id" FROM "{MEASUREMENT}" WHERE time >= {start} AND time < {end}')
    return {int(t): str(i) for s in series for t, i in s["values"]}


# ---- schema (no server) ---------------------------------------------------------------------------


def test_point_time_is_microsecond_plus_rank_and_stays_inside_the_day() -> None:
    last = dt.datetime(2025, 3, 10, 23, 59, 59, 999999, tzinfo=UTC)
    next_midnight_ns = int(dt.datetime(2025, 3, 11, tzinfo=UTC).timestamp()) * 10**9
    assert point_time_ns(last, 0) == next_midnight_ns - 1000
    assert point_time_ns(last, 999) == next_midnight_ns - 1
    # Nanoseconds past the µs in the input never leak in: the truncation is exact integer arithmetic.
    assert point_time_ns(dt.datetime(1970, 1, 1, 0, 0, 1, 7, tzinfo=UTC), 3) == 1_000_007_003
    with pytest.raises(ValueError, match="outside 0..999"):
        point_time_ns(last, 1000)
    with pytest.raises(ValueError, match="timezone-aware"):
        point_time_ns(dt.datetime(2025, 3, 10), 0)


def test_points_carry_only_model_and_provider_tags_and_stable_field_types() -> None:
    g = gen("gen-1", at(DAY), total_cost=2, latency=None, app_id=7, external_user='a "b"\nc')
    line = to_line(g, 0)
    head, _, rest = line.partition(" ")
    assert head == "generations,model=openai/gpt-4o,provider=OpenAI"
    assert ',total_cost=2,' in rest and "total_cost=2i" not in rest  # an int cost is still written as float
    assert "tokens_prompt=120i" in rest and "app_id=7i" in rest and "streamed=true" in rest
    assert 'generation_id="gen-1"' in rest and 'api_key="key-1"' in rest
    assert "latency=" not in rest and "moderation_latency=" not in rest  # None fields are omitted
    assert rest.endswith(f" {point_time_ns(g.created_at, 0)}")
    none = to_line(gen("gen-2", at(DAY), provider=None), 0)
    assert none.startswith("generations,model=openai/gpt-4o ")
    with pytest.raises(ValueError, match="provider_name is an empty string"):  # it would read back null
        to_line(gen("gen-3", at(DAY), provider=""), 0)


def test_new_ranks_follow_id_order_and_repeated_ids_collapse() -> None:
    t = at(DAY, micro=5)
    placement = place([gen("c", t), gen("a", t), gen("b", t), gen("a", t), gen("z", t, provider="Other")], [])
    assert placement.ranks == {"a": 0, "b": 1, "c": 2, "z": 0}


def test_more_than_1000_in_one_microsecond_is_refused_by_id() -> None:
    t = at(DAY, micro=1)
    placement = place([gen(f"g{i:04d}", t) for i in range(1001)], [])
    assert len(placement.ranks) == 1000 and list(placement.refused) == ["g1000"]
    assert "more than 1000 generations share model='openai/gpt-4o' provider='OpenAI'" in placement.refused["g1000"]


def test_config_keeps_everything_on_loopback_and_in_the_data_dir(tmp_path: Path) -> None:
    text = render_config(tmp_path, 18086, 18088)
    assert 'bind-address = "127.0.0.1:18088"' in text and 'bind-address = "127.0.0.1:18086"' in text
    assert f'dir = "{tmp_path / "meta"}"' in text and f'wal-dir = "{tmp_path / "wal"}"' in text
    assert "reporting-enabled = false" in text and "udp" not in text and "graphite" not in text


# ---- against influxd ------------------------------------------------------------------------------


def test_rewriting_the_same_batch_adds_no_point(store: InfluxStore) -> None:
    batch = [gen(f"gen-{i:03d}", at(DAY, hour=i % 24, minute=i), model=f"m{i % 3}") for i in range(50)]
    assert store.day_counts(DAY) == DayCounts(points=0, distinct_ids=0)
    assert store.write_generations(batch, batch_size=7).written == 50
    assert store.day_counts(DAY) == DayCounts(points=50, distinct_ids=50)
    assert store.write_generations(list(reversed(batch)), batch_size=13).written == 50
    assert store.day_counts(DAY) == DayCounts(points=50, distinct_ids=50)
    assert store.ids_by_model(DAY) == {"m0": 17, "m1": 17, "m2": 16}


def test_a_value_line_protocol_cannot_carry_is_refused_by_id_and_the_rest_written(store: InfluxStore) -> None:
    batch = [gen(f"gen-{i:03d}", at(DAY, 1, i)) for i in range(30)]
    batch[25] = gen("gen-025", at(DAY, 1, 25), latency=float("inf"))
    batch[3] = gen("gen-003", at(DAY, 1, 3), model="acme\\")  # a trailing backslash
    result = store.write_generations(batch, batch_size=10)
    assert result.written == 28 and set(result.refused) == {"gen-025", "gen-003"}
    assert "field 'latency' is inf" in result.refused["gen-025"]
    assert "trailing backslash" in result.refused["gen-003"]
    assert store.day_counts(DAY) == DayCounts(points=28, distinct_ids=28)


def test_points_the_server_refuses_are_found_by_id_and_the_rest_written(store: InfluxStore) -> None:
    """A field type InfluxDB already holds otherwise: the server names the problem, not the generation; the
    batch is split until the refused lines are found."""
    store.write_lines([f'{MEASUREMENT},model=m app_id="not a number" {point_time_ns(at(DAY, 23), 0)}'])
    batch = [gen(f"gen-{i:03d}", at(DAY, 2, i), app_id=7 if i in (4, 17) else None) for i in range(40)]
    result = store.write_generations(batch, batch_size=16)
    assert set(result.refused) == {"gen-004", "gen-017"} and result.written == 38
    assert all("field type conflict" in reason and "HTTP 400" in reason for reason in result.refused.values())
    assert store.day_counts(DAY).distinct_ids == 38


def test_same_microsecond_generations_are_kept_with_stable_ranks_and_no_stale_point(store: InfluxStore) -> None:
    t = at(DAY, 9, 30, 0, 123456)
    base = point_time_ns(t, 0)
    first = [gen("gen-f", t), gen("gen-b", t), gen("gen-d", t)]
    store.write_generations(first)
    assert times_to_ids(store, DAY) == {base: "gen-b", base + 1: "gen-d", base + 2: "gen-f"}
    store.write_generations(list(reversed(first)))
    assert times_to_ids(store, DAY) == {base: "gen-b", base + 1: "gen-d", base + 2: "gen-f"}
    # A later fetch finds one more generation in the same µs, sorting first: it takes a new rank, none moves.
    store.write_generations([*first, gen("gen-a", t)])
    assert times_to_ids(store, DAY) == {base: "gen-b", base + 1: "gen-d", base + 2: "gen-f", base + 3: "gen-a"}
    assert store.day_counts(DAY) == DayCounts(points=4, distinct_ids=4)


def test_a_duplicate_generation_id_shows_up_in_day_counts(store: InfluxStore) -> None:
    store.write_generations([gen("gen-1", at(DAY, 1)), gen("gen-2", at(DAY, 2))])
    store.write_lines([to_line(gen("gen-1", at(DAY, 3), provider="Azure"), 0)])
    assert store.day_counts(DAY) == DayCounts(points=3, distinct_ids=2)


def test_costs_and_ids_per_model(store: InfluxStore) -> None:
    store.write_generations(
        [
            gen("a1", at(DAY, 1), model="a", total_cost=0.25, usage=0.125),
            gen("a2", at(DAY, 2), model="a", total_cost=0.5, usage=None, provider=None),
            gen("b1", at(DAY, 3), model="b", total_cost=1, usage=2),
        ]
    )
    assert store.cost_by_model(DAY) == {"a": 0.75, "b": 1.0}
    assert store.usage_by_model(DAY) == {"a": 0.125, "b": 2.0}
    assert store.ids_by_model(DAY) == {"a": 2, "b": 1}


def test_a_field_type_conflict_fails_the_write_with_the_server_text(store: InfluxStore) -> None:
    store.write_generations([gen("gen-1", at(DAY))])
    bad = f'{MEASUREMENT},model=m generation_id="gen-x",total_cost="free" {point_time_ns(at(DAY, 5), 0)}'
    with pytest.raises(InfluxWriteError) as caught:
        store.write_lines([bad])
    err = caught.value
    assert err.status == 400 and err.batch_size == 1 and err.database == store.settings.database
    assert "field type conflict" in str(err) and '"total_cost"' in str(err)
    assert store.settings.database in str(err) and "HTTP 400" in str(err)


def test_writes_to_a_missing_database_fail_without_leaking_credentials(influxd: LocalInfluxd) -> None:
    for creds in ({"token": SECRET_TOKEN}, {"username": "ledger", "password": SECRET_PASSWORD}):
        store = _new_store(influxd, database="no_such_db", **creds)
        with pytest.raises(InfluxWriteError) as caught:
            store.write_lines([to_line(gen("gen-1", at(DAY)), 0), to_line(gen("gen-2", at(DAY, 1)), 0)])
        err = caught.value
        text = f"{err} {err!r} {err.server_text} {store.settings!r}"
        assert err.status == 404 and err.batch_size == 2
        assert 'database not found: "no_such_db"' in str(err)
        assert SECRET_TOKEN not in text and SECRET_PASSWORD not in text
        with pytest.raises(InfluxQueryError, match="database not found: no_such_db") as upserting:
            store.write_generations([gen(f"gen-{i}", at(DAY, i)) for i in range(5)])  # its ranks read it first
        assert SECRET_TOKEN not in str(upserting.value) and SECRET_PASSWORD not in str(upserting.value)
        with pytest.raises(InfluxQueryError) as query_err:
            store.query("SELECT FROM")
        assert "error parsing query" in str(query_err.value)
        assert SECRET_TOKEN not in str(query_err.value) and SECRET_PASSWORD not in str(query_err.value)
        store.close()


def _retention(store: InfluxStore) -> list[list[Any]]:
    return [row for s in store.query(f'SHOW RETENTION POLICIES ON "{store.settings.database}"') for row in s["values"]]


def test_ensure_database_is_idempotent_and_sets_the_default_retention(influxd: LocalInfluxd) -> None:
    database = f"ledger_{uuid.uuid4().hex[:10]}"
    monthly = _new_store(influxd, database=database, retention_days=30)
    monthly.ensure_database()
    recent = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    monthly.write_generations([gen("gen-1", recent)])
    monthly.ensure_database()
    assert _retention(monthly) == [["autogen", "720h0m0s", "24h0m0s", 1, True]]
    forever = _new_store(influxd, database=database, retention_days=None)
    forever.ensure_database()
    forever.ensure_database()
    assert _retention(forever) == [["autogen", "0s", "168h0m0s", 1, True]]
    assert forever.day_counts(recent.date()) == DayCounts(points=1, distinct_ids=1)  # data kept, still visible
    forever.query(f'DROP DATABASE "{database}"')


def test_iter_day_frames_streams_every_point_of_the_day_exactly_once(store: InfluxStore) -> None:
    in_day = [gen(f"mid-{i:03d}", at(DAY, i % 24, i % 60, i % 7), model=f"m{i % 2}") for i in range(40)]
    in_day += [gen(f"first-{i}", at(DAY, 0, 0, 0, 0), provider=None) for i in range(2)]
    in_day += [gen(f"last-{i}", at(DAY, 23, 59, 59, 999999)) for i in range(3)]
    outside = [
        gen("prev-day", at(DAY - dt.timedelta(days=1), 23, 59, 59, 999999)),
        gen("next-day", at(DAY + dt.timedelta(days=1), 0, 0, 0, 0)),
    ]
    store.write_generations(in_day + outside)
    assert store.day_counts(DAY - dt.timedelta(days=1)).points == 1
    assert store.day_counts(DAY + dt.timedelta(days=1)).points == 1

    frames = list(store.iter_day_frames(DAY, chunk_size=7))
    assert len(frames) >= 7 and all(0 < len(f) <= 7 for f in frames)
    streamed = pd.concat(frames, ignore_index=True)
    assert len(streamed) == 45
    assert sorted(streamed["generation_id"]) == sorted(g.id for g in in_day)
    start_ns = point_time_ns(at(DAY, 0), 0)
    assert streamed["time"].min() == start_ns and streamed["time"].max() == start_ns + 86_400 * 10**9 - 1000 + 2
    assert list(streamed.columns[:3]) == ["time", "model", "provider"]
    assert set(FIELD_TYPES) <= set(streamed.columns) and str(streamed["time"].dtype) == "int64"
    assert streamed.loc[streamed["generation_id"] == "first-0", "provider"].isna().all()
    assert streamed.loc[streamed["generation_id"] == "mid-001", "tokens_prompt"].tolist() == [120]
    assert str(streamed["tokens_prompt"].dtype) == "Int64" and str(streamed["total_cost"].dtype) == "float64"


def test_series_cardinality_is_model_provider_combinations(store: InfluxStore) -> None:
    models, providers = ["m1", "m2", "m3"], ["p1", "p2", None]
    batch = [
        gen(f"gen-{i:03d}", at(DAY, i % 24, i % 60), model=models[i % 3], provider=providers[(i // 3) % 3])
        for i in range(90)
    ]
    store.write_generations(batch)
    keys = {row[0] for s in store.query(f'SHOW SERIES FROM "{MEASUREMENT}"') for row in s["values"]}
    expected = {f"generations,model={m}" + (f",provider={p}" if p else "") for m in models for p in providers}
    assert keys == expected and len(keys) == 9
    assert store.day_counts(DAY) == DayCounts(points=90, distinct_ids=90)


def test_a_generation_whose_tags_changed_moves_leaving_no_stale_point_even_from_an_absent_tag(
        store: InfluxStore) -> None:
    """The stale point is deleted by its whole identity; an absent provider tag is matched as `provider = ''`
    (and a point of another id in the same µs and model is left alone)."""
    t = at(DAY, 8, 0, 0, 42)
    store.write_generations([gen("a", t), gen("c", t, provider=None), gen("d", at(DAY, 9))])
    result = store.write_generations([gen("c", t, provider="Azure")])
    assert result.stale_deleted == 1 and result.written == 1
    frame = pd.concat(list(store.iter_day_frames(DAY)))
    assert sorted(frame["generation_id"]) == ["a", "c", "d"]
    assert frame.loc[frame["generation_id"] == "c", "provider"].iloc[0] == "Azure"
    assert store.day_counts(DAY) == DayCounts(points=3, distinct_ids=3)


# ---- retry policy and 2.x/3.x setup (a scripted HTTP server) ------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    """Answers /ping with `version` and other requests with the next scripted (status, JSON body)."""

    replies: list[tuple[int, dict[str, Any]]] = []
    seen: list[tuple[str, str, str]] = []  # (method, path, body)
    version = "1.8.10"

    def _reply(self, status: int, payload: dict[str, Any] | None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("X-Influxdb-Version", self.version)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        type(self).seen.append(("GET", self.path, ""))
        self._reply(204, None)

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        type(self).seen.append(("POST", self.path, body))
        status, payload = type(self).replies.pop(0) if type(self).replies else (204, {})
        echo = self.headers.get("Authorization", "")  # a careless server echoing the credential back
        echoed = {k: f"{v} auth={echo}" if k in ("error", "message") else v for k, v in payload.items()}
        self._reply(status, None if status == 204 else echoed)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    with scripted_server(_Scripted) as (host, handler):
        yield f"http://{host}", handler


def test_5xx_is_retried_but_400_is_not_and_echoed_secrets_are_redacted(
    scripted: tuple[str, type[_Scripted]], caplog: pytest.LogCaptureFixture,
) -> None:
    url, handler = scripted
    store = InfluxStore(InfluxSettings(url=url, database="db", token=SECRET_TOKEN))
    handler.replies[:] = [(503, {"error": "busy"}), (500, {"error": "timeout"})]
    with caplog.at_level(logging.WARNING, logger="usage_pipeline.retries"):
        store.write_lines(["m f=1 1"])
    assert [method for method, _, _ in handler.seen] == ["POST"] * 3
    assert [r.getMessage() for r in caplog.records if r.name == "usage_pipeline.retries"] == [
        "InfluxDB POST /write: HTTP 503; retry 1 in 0.50 s",  # no query string (db=...), no host
        "InfluxDB POST /write: HTTP 500; retry 2 in 1.00 s",
    ]
    assert SECRET_TOKEN not in caplog.text
    handler.seen.clear()
    handler.replies[:] = [(400, {"error": "unable to parse"})]
    with pytest.raises(InfluxWriteError, match=r"HTTP 400: unable to parse auth=Token \*\*\*") as caught:
        store.write_lines(["m f=1 1"])
    assert len(handler.seen) == 1
    assert SECRET_TOKEN not in f"{caught.value} {caught.value.server_text}"
    store.close()


def test_on_2x_ensure_database_only_verifies_and_names_the_bucket_command(
    scripted: tuple[str, type[_Scripted]],
) -> None:
    url, handler = scripted
    handler.version = "v2.7.4"
    store = InfluxStore(InfluxSettings(url=url, database="ledger", token=SECRET_TOKEN, retention_days=30))
    handler.replies[:] = [(200, {"results": [{"statement_id": 0}]})]
    store.ensure_database()
    assert [m for m, _, _ in handler.seen] == ["GET", "POST"] and "CREATE" not in handler.seen[1][2]
    handler.replies[:] = [(404, {"code": "not found", "message": 'database "ledger" not found'})]
    with pytest.raises(InfluxSetupError) as caught:
        store.ensure_database()
    message = str(caught.value)
    assert 'database "ledger" not found' in message and "influx bucket create --name ledger --retention 30d" in message
    assert SECRET_TOKEN not in message
    assert not any("CREATE" in body or "ALTER" in body for _, _, body in handler.seen)
    store.close()
