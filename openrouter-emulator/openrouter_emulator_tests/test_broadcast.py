"""Broadcast pushes, over real HTTP into a receiver in this process: shaped like the real deliveries, carrying
the figures `GET /generation` answers, misbehaving exactly as told and counting exactly what it did, live
mode pushing today as it completes, and the token never in the emulator's log.

A receiver that trusts the pushes must be tested against deliveries that lie, vanish, repeat and arrive
out of order, and the test must know which ones did: hence exact counts, checked against what arrived.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from openrouter_emulator import server
from openrouter_emulator.broadcast_settings import TOKEN_ENV
from openrouter_emulator.process import EmulatorControlError, EmulatorProcess, run_emulator
from openrouter_emulator_tests.broadcast_receiver import Post, Receiver, free_port, run_receiver
from openrouter_emulator_tests.shapes import real_payload
from openrouter_emulator_tests.support import call, day_range, iso, query, rows_of, today, wait_until, yesterday

TOKEN = "broadcast-token-7c1d"  # noqa: S105 - a throwaway; the tests check it never reaches the log
REAL = {name: real_payload(f"broadcast/{name}") for name in (
    "00-connection-test-2026-09-28.json", "01-codex-gpt-5.1-codex-mini-azure-2026-09-28.delivery1.json",
    "02-codex-error-span-client-disconnected-2026-09-28.ELIDED.json",
    "03-pi-claude-haiku-4.5-bedrock-no-session-2026-09-28.delivery1.json")}
CONNECTION, CODEX, ERROR, HAIKU = REAL.values()
# Keys a root may carry: those of the two real successful roots (one with a session, one Anthropic), or the error's.
SUCCESS_KEYS = {a["key"] for body in (CODEX, HAIKU) for a in body["resourceSpans"][0]["scopeSpans"][0]["spans"][0][
    "attributes"]}
TEXT_KEYS = {"gen_ai.prompt", "gen_ai.completion"}  # never sent (privacy mode)
FINISH_KEYS = {"gen_ai.response.finish_reasons", "gen_ai.response.finish_reason",
               "trace.metadata.openrouter.finish_reason"}
ATTEMPT = re.compile(r"^provider attempt (\d+): (.+)$")


def spans(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def kinds(span: dict[str, Any]) -> dict[str, str]:
    """Attribute key -> AnyValue kind (`intValue`, ...)."""
    return {a["key"]: next(iter(a["value"])) for a in span["attributes"]}


def value(span: dict[str, Any], key: str) -> Any:
    return next(next(iter(a["value"].values())) for a in span["attributes"] if a["key"] == key)


def int_values(body: dict[str, Any]) -> list[Any]:
    return [a["value"]["intValue"] for s in spans(body) for a in s["attributes"] if "intValue" in a["value"]]


def records(emu: EmulatorProcess, ids: list[str]) -> dict[str, dict[str, Any]]:
    """What `GET /generation` answers for each id (management key)."""
    with requests.Session() as session:
        answers = {i: call(emu, "GET", "/generation", params={"id": i}, session=session) for i in ids}
    assert {a.status_code for a in answers.values()} == {200}
    return {i: a.json()["data"] for i, a in answers.items()}


def created_ms(record: dict[str, Any]) -> int:
    """`created_at` in whole ms since the epoch, exactly (no float on the way)."""
    since_epoch = dt.datetime.fromisoformat(record["created_at"]) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return since_epoch // dt.timedelta(milliseconds=1)


def done_s(record: dict[str, Any]) -> float:
    """When the generation completed, epoch seconds: created_at + generation_time to the ms, as the pusher and
    the root span's end count it."""
    return (created_ms(record) + round(record["generation_time"])) / 1000


def within(observed: int, total: int, share: float) -> bool:
    """The observed count is the share's within four standard deviations (a chance failure: ~1 in 15,000)."""
    return abs(observed - share * total) <= 4 * math.sqrt(total * share * (1 - share)) + 1


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("broadcast") / "emulator.log"
    with run_emulator(seed=11, generations_per_day=2000, days=1, extra_args=["--analytics-rpm", "0"],
                      log_path=log) as process:
        yield process


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with run_receiver() as running:
        yield running


@pytest.fixture
def rx(receiver: Receiver) -> Receiver:
    receiver.clear()
    return receiver


@pytest.fixture(scope="module")
def pushed(emu: EmulatorProcess, receiver: Receiver) -> tuple[dict[str, Any], list[Post], dict[str, dict[str, Any]]]:
    """300 of yesterday's deliveries, a tenth of them error spans, after a connection test: (counts, posts,
    records)."""
    receiver.clear()
    counts = emu.broadcast_day(yesterday(), receiver.url, token=TOKEN, limit=300, error_span_share=0.1,
                               connection_test=True)
    posts = receiver.snapshot()
    return counts, posts, records(emu, [p.delivery_id for p in posts if p.delivery_id])


def test_the_connection_test_comes_first_and_is_the_real_one(pushed: Any) -> None:
    counts, posts, _ = pushed
    first, rest = posts[0], posts[1:]
    assert first.headers["X-Test-Connection"] == "true" and first.delivery_id is None
    assert not any("X-Test-Connection" in p.headers for p in rest)
    assert counts["connection_test"] == {"status": 200}
    span, real = spans(first.body)[0], spans(CONNECTION)[0]
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == 1_000_000
    times = {"startTimeUnixNano", "endTimeUnixNano"}
    assert {k: v for k, v in span.items() if k not in times} == {k: v for k, v in real.items() if k not in times}
    assert first.body["resourceSpans"][0]["resource"] == CONNECTION["resourceSpans"][0]["resource"]
    assert {p.headers["Authorization"] for p in posts} == {f"Bearer {TOKEN}"}
    assert all(p.headers["Content-Type"] == "application/json" for p in posts)


def test_deliveries_are_shaped_like_the_real_ones(pushed: Any) -> None:
    """Span names, resource attributes, attribute keys (a superset of the real root's, less the prompt and
    completion text; no key the real ones lack) and value kinds, ids, timestamps at ms precision."""
    counts, posts, recs = pushed
    deliveries = [p for p in posts if p.delivery_id]
    assert len(deliveries) == counts["delivered"] == counts["generations"] == 300
    real_resource = CODEX["resourceSpans"][0]["resource"]["attributes"]
    for post in deliveries:
        gen_id, record = post.delivery_id, recs[post.delivery_id]
        error = gen_id in counts["error_span_ids"]
        real = ERROR if error else HAIKU if record["model"].startswith("anthropic/") else CODEX
        for rs in post.body["resourceSpans"]:
            assert [a["key"] for a in rs["resource"]["attributes"]] == [a["key"] for a in real_resource]
            assert rs["resource"]["attributes"][1]["value"] == {"stringValue": gen_id}
            assert [ss["scope"] for ss in rs["scopeSpans"]] == [{"name": "openrouter"}]
        root, *children = spans(post.body)
        real_root, *real_children = spans(real)
        assert root["name"] == "LLM Generation" and value(root, "gen_ai.response.id") == gen_id
        assert root.keys() == real_root.keys() and root["kind"] == real_root["kind"] == 3
        assert re.fullmatch(r"[0-9a-f]{32}", root["traceId"]) and root["spanId"] == root["traceId"][:16]
        assert root["status"] == real_root["status"]
        optional = TEXT_KEYS | (set() if record.get("session_id") else {"session.id"}) | (
            set() if record["finish_reason"] else FINISH_KEYS)  # a cancelled stream has no finish reason
        allowed = set(kinds(real_root)) if error else SUCCESS_KEYS
        assert set(kinds(real_root)) - optional <= set(kinds(root)) <= allowed - TEXT_KEYS
        real_kinds = {**kinds(spans(CODEX)[0]), **kinds(spans(HAIKU)[0]), **kinds(real_root)}
        assert {k: real_kinds[k] for k in kinds(root)} == kinds(root)
        for span in (root, *children):
            start, end = span["startTimeUnixNano"], span["endTimeUnixNano"]
            assert start.isdigit() and end.isdigit() and int(start) % 1_000_000 == int(end) % 1_000_000 == 0
        assert int(root["startTimeUnixNano"]) // 1_000_000 == created_ms(record)
        assert int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"]) == record["generation_time"] * 1_000_000
        if error:
            assert children == [] and not any(k.startswith("gen_ai.usage.") for k in kinds(root))
            assert value(root, "span.level") == "ERROR"
            assert [e["name"] for e in root["events"]] == [e["name"] for e in real_root["events"]]
            continue
        *attempts, generation = children
        assert [ATTEMPT.match(a["name"]).group(2) for a in attempts] == [
            r["provider_name"] for r in record["provider_responses"]]
        assert [ATTEMPT.match(a["name"]).group(1) for a in attempts] == [str(n + 1) for n in range(len(attempts))]
        for span, real_span in ((attempts[-1], real_children[0]), (generation, real_children[1])):
            assert span.keys() == real_span.keys() and span["kind"] == real_span["kind"] == 2
            assert span["parentSpanId"] == root["spanId"] and span["traceId"] == root["traceId"]
            assert kinds(span) == kinds(real_span)
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in int_values(post.body))


def test_span_figures_equal_the_generation_records(pushed: Any) -> None:
    """Cost and tokens as `GET /generation` answers them; the slug, the permaslug the record names, the provider."""
    counts, posts, recs = pushed
    for post in (p for p in posts if p.delivery_id and p.delivery_id not in counts["error_span_ids"]):
        root, *attempts, _ = spans(post.body)
        record = recs[post.delivery_id]
        assert value(root, "gen_ai.usage.total_cost") == record["total_cost"]
        assert value(root, "gen_ai.usage.input_cost") + value(root, "gen_ai.usage.output_cost") == record["total_cost"]
        assert value(root, "gen_ai.usage.input_tokens") == record["tokens_prompt"]
        assert value(root, "gen_ai.usage.output_tokens") == record["tokens_completion"]
        assert value(root, "gen_ai.usage.total_tokens") == record["tokens_prompt"] + record["tokens_completion"]
        assert value(root, "gen_ai.usage.output_tokens.reasoning") == record["native_tokens_reasoning"]
        assert value(root, "gen_ai.usage.input_tokens.cached") == record["native_tokens_cached"]
        assert value(attempts[-1], "span.metadata.model_permaslug") == record["model"]  # live: the permaslug
        assert value(root, "gen_ai.request.model") == value(root, "gen_ai.response.model")
        assert record["model"].startswith(value(root, "gen_ai.request.model").split("/")[0] + "/")
        assert value(root, "trace.metadata.openrouter.provider_name") == record["provider_name"]
        assert value(root, "trace.metadata.provider_responses") == value(root, "span.metadata.provider_responses")
        if record.get("session_id"):
            assert value(root, "session.id") == record["session_id"]


def test_a_whole_day_adds_up_to_the_truth_and_the_analytics(emu: EmulatorProcess, rx: Receiver) -> None:
    """Models by slug and permaslug, keys by the label analytics answers, users by id, cost: as the truth."""
    day = yesterday()
    counts = emu.broadcast_day(day, rx.url, concurrency=16)
    truth = emu.truth(day)
    roots = [spans(p.body)[0] for p in rx.deliveries()]
    assert sorted(counts["delivered_ids"]) == sorted(value(r, "gen_ai.response.id") for r in roots) == truth["ids"]
    assert Counter(value(r, "gen_ai.request.model") for r in roots) == truth["by_model"]
    answering = [spans(p.body)[-2] for p in rx.deliveries()]  # the last attempt, before `generation`
    assert Counter(value(s, "span.metadata.model_permaslug") for s in answering) == truth["by_model_permaslug"]
    assert Counter(value(r, "trace.metadata.openrouter.api_key_name") for r in roots) == truth["by_api_key"]
    assert math.isclose(sum(value(r, "gen_ai.usage.total_cost") for r in roots), truth["cost"], rel_tol=1e-9)
    by_key = rows_of(query(emu, {"metrics": ["request_count"], "dimensions": ["api_key_id"],
                                 "time_range": day_range(day)}).json())
    assert {r["api_key_id"]: int(r["request_count"]) for r in by_key} == truth["by_api_key"]
    emu.configure(analytics_labels=False)  # users by id, as the spans name them
    try:
        by_user = rows_of(query(emu, {"metrics": ["request_count"], "dimensions": ["user"],
                                      "time_range": day_range(day)}).json())
    finally:
        emu.reset_config()
    users = Counter(value(r, "trace.metadata.openrouter.entity_id") for r in roots)
    assert users == {r["user"]: int(r["request_count"]) for r in by_user}
    assert all(value(r, "trace.metadata.openrouter.creator_user_id") == value(r, "trace.metadata.openrouter.entity_id")
               for r in roots)


def refusing(gen_id: str | None, nth: int) -> int:
    """503 to every POST of a thirteenth of the ids, and to the first POST of another thirteenth."""
    bucket = int(hashlib.sha256(str(gen_id).encode()).hexdigest(), 16) % 13
    return 503 if bucket == 0 or (bucket == 1 and nth == 1) else 200


def test_hostile_settings_happen_at_their_shares_and_are_counted_exactly(emu: EmulatorProcess, rx: Receiver) -> None:
    shares: dict[str, Any] = {"drop_share": 0.1, "duplicate_share": 0.15, "error_span_share": 0.05, "gzip_share": 0.3,
              "string_ints_share": 0.3, "mismatch_share": 0.1}
    rx.clear(answer=refusing)
    counts = emu.broadcast_day(yesterday(), rx.url, token=TOKEN, delay_ms=15, concurrency=16, **shares)
    posts = rx.snapshot()
    ids = emu.truth(yesterday())["ids"]
    sent, dropped = set(counts["sent_ids"]), set(counts["dropped_ids"])
    assert counts["generations"] == len(ids) and sent | dropped == set(ids) and not sent & dropped
    per_id = Counter(p.delivery_id for p in posts)
    assert set(per_id) == sent and counts["sent"] == len(sent) and counts["pending"] == 0
    assert {i for i, n in per_id.items() if n == 2} == set(counts["duplicated_ids"]) and max(per_id.values()) == 2
    firsts: dict[str | None, Post] = {}
    for post in posts:  # a duplicate is the same bytes, sent the same way
        first = firsts.setdefault(post.delivery_id, post)
        assert (post.raw, post.gzipped) == (first.raw, first.gzipped)
    assert set(counts["delivered_ids"]) == {p.delivery_id for p in posts if p.status == 200}
    assert set(counts["failed_ids"]) == sent - set(counts["delivered_ids"]) != set()
    assert counts["by_status"] == {str(k): n for k, n in Counter(p.status for p in posts).items()}
    assert counts["posts"] == len(posts) and counts["connection_errors"] == 0
    assert {p.delivery_id for p in posts if p.gzipped} == set(counts["gzipped_ids"])
    assert all(p.raw[:2] == b"\x1f\x8b" if p.gzipped else p.raw[:1] == b"{" for p in posts)
    errors = {p.delivery_id for p in posts if spans(p.body)[0]["status"]["code"] == 2}
    assert errors == set(counts["error_span_ids"]) and not errors & set(counts["mismatched_ids"])
    stringy = {p.delivery_id for p in posts
               if int_values(p.body) and all(isinstance(v, str) for v in int_values(p.body))}
    assert stringy == set(counts["string_int_ids"]) - errors  # an error span has no intValue to show it
    assert all(all(isinstance(v, int) for v in int_values(p.body)) for p in posts if p.delivery_id not in stringy)
    recs = records(emu, sorted(sent - errors))
    mismatched = {i for i, r in recs.items()
                  if value(spans(firsts[i].body)[0], "gen_ai.usage.total_cost") != r["total_cost"]}
    assert mismatched == set(counts["mismatched_ids"])
    for name, key in (("drop_share", "dropped"), ("duplicate_share", "duplicated"), ("gzip_share", "gzipped"),
                      ("error_span_share", "error_spans"), ("string_ints_share", "string_ints")):
        base = len(ids) if key == "dropped" else len(sent)
        assert within(counts[key], base, shares[name]), (key, counts[key], base)
    assert within(counts["mismatched"], len(sent) - len(errors), shares["mismatch_share"])


def test_reorder_window_shuffles_within_each_window(emu: EmulatorProcess, rx: Receiver) -> None:
    """One POST at a time: in completion order without a window, each window of 10 shuffled with one."""
    in_order = emu.broadcast_day(yesterday(), rx.url, limit=120, concurrency=1)
    arrived = [p.delivery_id for p in rx.snapshot()]
    assert arrived == in_order["sent_ids"]
    ends = [int(spans(p.body)[0]["endTimeUnixNano"]) for p in rx.snapshot()]
    assert ends == sorted(ends)  # as requests complete
    rx.clear()
    shuffled = emu.broadcast_day(yesterday(), rx.url, limit=120, concurrency=1, reorder_window=10)
    moved = [p.delivery_id for p in rx.snapshot()]
    assert moved == shuffled["sent_ids"] != arrived
    assert [set(moved[k:k + 10]) for k in range(0, 120, 10)] == [set(arrived[k:k + 10]) for k in range(0, 120, 10)]


def test_no_answer_is_counted_as_a_connection_error(emu: EmulatorProcess) -> None:
    counts = emu.broadcast_day(yesterday(), f"http://127.0.0.1:{free_port()}/v1/traces", limit=5, post_timeout_s=2)
    assert (counts["sent"], counts["failed"], counts["delivered"], counts["connection_errors"]) == (5, 5, 0, 5)
    assert counts["by_status"] == {} and counts["last_connection_error"]


@pytest.mark.parametrize(("setting", "named"), [
    ({"drop_share": 1.5}, "drop_share"), ({"gzip_share": -0.1}, "gzip_share"), ({"concurrency": 0}, "concurrency"),
    ({"concurrency": 2.5}, "concurrency"), ({"reorder_window": -1}, "reorder_window"), ({"delay_ms": "x"}, "delay_ms"),
    ({"mismatch_share": True}, "mismatch_share"), ({"drops": 0.1}, "drops"), ({"url": "ftp://x/"}, "url"),
    ({"day": "yesterday"}, "day"), ({"day": "2001-01-01"}, "day"), ({"limit": 0}, "limit"),
    ({"headers": {"Bad Name": "x"}}, "header name"), ({"connection_test": "yes"}, "connection_test"),
    ({"headers": {"Authorization": f"Bearer {TOKEN}\n"}}, "Authorization"),
])
def test_a_bad_setting_is_refused_naming_it(emu: EmulatorProcess, rx: Receiver, setting: dict[str, Any],
                                            named: str) -> None:
    body = {"day": yesterday().isoformat(), "url": rx.url, **setting}
    with pytest.raises(EmulatorControlError) as refused:
        emu.control("POST", "/broadcast", body)
    assert refused.value.status == 400 and named in str(refused.value) and TOKEN not in str(refused.value)
    assert rx.snapshot() == []


@pytest.mark.parametrize(("flags", "named"), [
    (["--broadcast-url", "http://127.0.0.1:9/", "--broadcast-drop-share", "2"], "--broadcast-drop-share"),
    (["--broadcast-url", "http://127.0.0.1:9/", "--broadcast-concurrency", "0"], "--broadcast-concurrency"),
    (["--broadcast-url", "ftp://x/"], "--broadcast-url"),
    (["--broadcast-header", "X-Extra: 1"], "--broadcast-url"),
    (["--broadcast-url", "http://127.0.0.1:9/", "--broadcast-header", f"Authorization Bearer {TOKEN}"],
     "--broadcast-header"),
    (["--broadcast-url", "http://127.0.0.1:9/", "--broadcast-header", f"Authorization: Bearer {TOKEN}"], TOKEN_ENV),
])
def test_bad_broadcast_flags_are_usage_errors_naming_the_flag(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], flags: list[str],
                                                              named: str) -> None:
    monkeypatch.setenv(TOKEN_ENV, "env-token-5e")
    with pytest.raises(SystemExit) as exited:
        server.main(flags)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and named in err and TOKEN not in err and "env-token-5e" not in err


def test_the_token_never_reaches_the_log(emu: EmulatorProcess, rx: Receiver) -> None:
    emu.broadcast_day(yesterday(), rx.url, token=TOKEN, limit=20, connection_test=True, gzip_share=0.5)
    emu.broadcast_day(yesterday(), f"http://127.0.0.1:{free_port()}/", token=TOKEN, limit=2)
    assert rx.snapshot() and "broadcast replay" in emu.log_path.read_text()
    assert TOKEN not in emu.log_path.read_text()


def test_live_mode_pushes_today_as_it_completes(receiver: Receiver, tmp_path: Any) -> None:
    """`--broadcast-url` with the token from the environment: the connection test first, then each of today's
    generations once it has completed (never before), in the order they complete, every one that completed,
    and added ones once visible. It waits on what arrives, never on the clock: no sleep, no bound on a lag.
    Checked to fail when the pusher pushes a second early, leaves out every 7th id, offers a tick's due ids
    in reverse, or never pushes added ones."""
    receiver.clear()
    flags = ["--broadcast-url", receiver.url, "--fresh-404-seconds", "0", "--analytics-rpm", "0"]
    with run_emulator(seed=5, generations_per_day=1_000_000, days=0, extra_args=flags, env={TOKEN_ENV: TOKEN},
                      log_path=tmp_path / "live.log") as live:
        first = receiver.wait_for(1, timeout_s=60)[0]
        assert first.headers["X-Test-Connection"] == "true" and first.delivery_id is None
        started = dt.datetime.fromisoformat(live.broadcast_stats()["started_at"]).timestamp()
        receiver.wait_for(1 + 20, timeout_s=60)  # some of today's generations have completed and arrived
        added_at = time.time()
        added = set(live.add_generations(today(), 3))  # completed earlier today, visible from now
        wait_until(receiver.snapshot, lambda posts: added <= {p.delivery_id for p in posts})
        checked_at = time.time()
        window = {"start": iso(dt.datetime.fromtimestamp(started - 20, dt.UTC)),
                  "end": iso(dt.datetime.fromtimestamp(checked_at, dt.UTC))}
        rows = rows_of(query(live, {"metrics": ["request_count"], "dimensions": ["generation_id"], "limit": 10_000,
                                    "time_range": window}).json())
        recs = records(live, [r["generation_id"] for r in rows])
        # Every generation that completed after the pusher started and by `checked_at` is pushed: wait until
        # the receiver holds them all (`started` is the ms-truncated start, hence the 1 ms).
        completed = {i for i, r in recs.items() if i not in added and started + 0.001 <= done_s(r) <= checked_at}
        before = live.broadcast_stats()
        posts = wait_until(receiver.snapshot, lambda posts: completed <= {p.delivery_id for p in posts})
        after = live.broadcast_stats()
    deliveries = [p for p in posts if p.delivery_id]
    received = {p.delivery_id for p in deliveries}
    assert [p for p in posts if "X-Test-Connection" in p.headers] == [first]
    assert {p.headers["Authorization"] for p in posts} == {f"Bearer {TOKEN}"}
    assert set(before["delivered_ids"]) <= received <= set(after["sent_ids"]) and before["live"] is True
    assert completed and completed <= received and added <= received
    # Never before its completion (the receiver's clock is the pusher's: one machine), added ones once added.
    lags = [p.at - int(spans(p.body)[0]["endTimeUnixNano"]) / 1e9 for p in deliveries if p.delivery_id not in added]
    assert lags and min(lags) >= 0, min(lags)
    assert all(p.at > added_at for p in deliveries if p.delivery_id in added)
    # Sent as they complete: the pusher's own record of what it sent is in completion order (the root span's end).
    end_ns = {p.delivery_id: int(spans(p.body)[0]["endTimeUnixNano"]) for p in deliveries}
    sent_ends = [end_ns[i] for i in after["sent_ids"] if i in end_ns and i not in added]
    assert len(sent_ends) >= len(completed) and sent_ends == sorted(sent_ends)
    log = (tmp_path / "live.log").read_text()
    assert "connection test {'status': 200}" in log and TOKEN not in log
