"""`usage-pipeline receive` as a real process over HTTP: the real deliveries journaled once however often
sent, hostile ones refused with a 4xx naming why (never a 5xx, never journaled, never a crash), and the
token asked for, compared and never shown."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from usage_pipeline.broadcast.receiver import MAX_GZIP_MEMBERS, BodyError, decoded
from usage_pipeline_tests.push import (
    CODEX,
    CONNECTION_TEST,
    ERROR_SPAN,
    HAIKU,
    TOKEN,
    Receiver,
    delivery,
    real,
    receiver_env,
    run_receiver,
)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    root = tmp_path_factory.mktemp("receiver")
    with run_receiver(root / "journal.sqlite3", root / "receiver.log") as server:
        yield server


def journaled(journal: Path) -> dict[str, tuple[int, int]]:
    """id -> (deliveries, error) as the journal holds them, read on a connection of the test's own."""
    with sqlite3.connect(journal) as connection:
        return {r[0]: (r[1], r[2]) for r in connection.execute("SELECT id, deliveries, error FROM pushed")}


def test_the_real_deliveries_are_journaled_once_however_often_they_arrive(receiver: Receiver) -> None:
    ids = {"gen-1790606055-lQEtY5tcJIA3qEdgtaaa", "gen-1790606294-sdYHTGXUVyDKWCLqX5Op",
           "gen-1790606272-klALDjkN7Ke6rbM52aHZ"}
    for name in (CODEX, HAIKU, ERROR_SPAN, CODEX):
        answer = receiver.post(real(name))
        assert answer.status_code == 200, answer.text
    assert receiver.post(real(CODEX), gzipped=True).status_code == 200  # gzip, a third time
    found = journaled(receiver.journal)
    assert ids <= set(found)
    assert found["gen-1790606055-lQEtY5tcJIA3qEdgtaaa"] == (3, 0)  # one row, three deliveries
    assert found["gen-1790606272-klALDjkN7Ke6rbM52aHZ"] == (1, 1)  # the error span


def test_the_connection_test_is_answered_and_journals_nothing(receiver: Receiver) -> None:
    before = journaled(receiver.journal)
    tests = receiver.health()["connection_tests"]
    answer = receiver.post(real(CONNECTION_TEST), headers={"X-Test-Connection": "true"})
    assert answer.status_code == 200 and receiver.post(real(CONNECTION_TEST)).status_code == 200
    assert journaled(receiver.journal) == before and receiver.health()["connection_tests"] == tests + 2


def _hostile(receiver: Receiver) -> list[tuple[str, int, dict[str, object]]]:
    """(what, status expected, post arguments) for every hostile delivery."""
    wrong_type = delivery(CODEX, "gen-1790000000-hostileWrongType0000")
    wrong_type["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "many"}})
    return [
        ("no token", 401, {"body": delivery(CODEX, "gen-1790000000-hostileNoToken000000"), "token": None}),
        ("a wrong token", 401, {"body": delivery(CODEX, "gen-1790000000-hostileWrongToken000"), "token": "guess"}),
        ("malformed JSON", 400, {"body": None, "raw": b'{"resourceSpans": [{'}),
        ("not UTF-8", 400, {"body": None, "raw": b"\xff\xfe{}"}),
        ("wrong types", 400, {"body": wrong_type}),
        ("no id", 400, {"body": {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"name": "LLM Generation", "startTimeUnixNano": "1", "attributes": []}]}]}]}}),
        ("10 MB", 413, {"body": None, "raw": b'{"a": "' + b"x" * (10 << 20) + b'"}'}),
        ("a gzip bomb", 413, {"body": None, "raw": b'{"a": "' + b" " * (64 << 20) + b'"}', "gzipped": True}),
        ("broken gzip", 400, {"body": None, "raw": b"\x1f\x8b\x08broken", "headers": {"Content-Encoding": "gzip"}}),
        ("protobuf", 415, {"body": None, "raw": b"\x0a\x00", "headers": {"Content-Type": "application/x-protobuf"}}),
        ("nested too deeply", 400, {"body": None, "raw": b"[" * 50_000 + b"]" * 50_000}),
    ]


def test_hostile_deliveries_get_a_4xx_with_a_reason_and_store_nothing(receiver: Receiver) -> None:
    before = journaled(receiver.journal)
    for what, status, arguments in _hostile(receiver):
        answer = receiver.post(**arguments)  # type: ignore[arg-type]
        assert answer.status_code == status, (what, answer.status_code, answer.text)
        assert answer.json()["error"], what
    assert journaled(receiver.journal) == before
    assert receiver.post(real(HAIKU)).status_code == 200  # still serving
    log = receiver.log_path.read_text()
    assert TOKEN not in log and "Traceback" not in log and "guess" not in log


def test_a_replayed_delivery_is_one_generation(receiver: Receiver) -> None:
    body = delivery(HAIKU, "gen-1790000001-replayedReplayed0000")
    for _ in range(5):
        assert receiver.post(body).status_code == 200
    assert journaled(receiver.journal)["gen-1790000001-replayedReplayed0000"] == (5, 0)


def test_it_never_starts_without_a_token_unless_told_it_is_local_only(tmp_path: Path) -> None:
    env = receiver_env(tmp_path / "journal.sqlite3")
    del env["BROADCAST_TOKEN"]
    command = [sys.executable, "-m", "usage_pipeline.cli", "receive", "--port", "1"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "BROADCAST_TOKEN" in refused.stderr
    wide = subprocess.run([*command, "--local-only", "--host", "0.0.0.0"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert wide.returncode == 2 and "only on 127.0.0.1" in wide.stderr


def test_a_gzipped_delivery_with_ints_as_strings_is_read(receiver: Receiver) -> None:
    body = json.dumps(delivery(CODEX, "gen-1790000002-gzippedStringInts000", ints_as_strings=True)).encode()
    answer = receiver.post(None, raw=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 200 and "gen-1790000002-gzippedStringInts000" in journaled(receiver.journal)


def _with_key_name(gen_id: str, raw_name: str) -> bytes:
    """A real delivery whose api_key_name is `raw_name` as JSON text (so it can hold escapes json.dumps never
    writes from a valid str)."""
    text = json.dumps(delivery(HAIKU, gen_id, key_name="PLACEHOLDER"))
    return text.replace('"PLACEHOLDER"', raw_name).encode()


def test_a_name_sqlite_cannot_encode_is_refused_naming_it_and_the_receiver_goes_on(receiver: Receiver) -> None:
    answer = receiver.post(None, raw=_with_key_name("gen-1790000010-loneSurrogate000000", r'"fixture \ud800 key"'))
    assert answer.status_code == 400, answer.text
    assert "'trace.metadata.openrouter.api_key_name': holds a lone surrogate" in answer.json()["error"]
    assert "gen-1790000010-loneSurrogate000000" not in journaled(receiver.journal)
    after = receiver.post(delivery(HAIKU, "gen-1790000010-afterSurrogate00000"))
    assert after.status_code == 200 and "gen-1790000010-afterSurrogate00000" in journaled(receiver.journal)


def test_a_5000_digit_integer_is_a_400_naming_it_never_a_500(receiver: Receiver) -> None:
    text = json.dumps(delivery(HAIKU, "gen-1790000011-hugeInteger00000000"))
    assert '"intValue": 2489' in text
    answer = receiver.post(None, raw=text.replace('"intValue": 2489', '"intValue": ' + "7" * 5000).encode())
    assert answer.status_code == 400, answer.text
    assert "an integer of over 4,300 digits" in answer.json()["error"]
    assert "gen-1790000011-hugeInteger00000000" not in journaled(receiver.journal)


def test_a_1_mb_name_is_refused_whole_never_cut(receiver: Receiver) -> None:
    answer = receiver.post(delivery(HAIKU, "gen-1790000012-megabyteName000000", key_name="k" * (1 << 20)))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].endswith(
        "attribute 'trace.metadata.openrouter.api_key_name': 1,048,576 characters, over the 1,024 a name may have")
    assert "gen-1790000012-megabyteName000000" not in journaled(receiver.journal)


def test_a_multi_member_gzip_body_is_read_whole(receiver: Receiver) -> None:
    body = json.dumps(delivery(CODEX, "gen-1790000013-multiMemberGzip000")).encode()
    third = len(body) // 3
    members = b"".join(gzip.compress(part) for part in (body[:third], body[third:2 * third], body[2 * third:]))
    with pytest.raises(json.JSONDecodeError):
        json.loads(gzip.decompress(members[:len(gzip.compress(body[:third]))]))  # the first member alone is no JSON
    answer = receiver.post(None, raw=members, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert "gen-1790000013-multiMemberGzip000" in journaled(receiver.journal)


@pytest.mark.parametrize("trailing", [b"garbage", b"\x00" * 8, b"\x1f"])
def test_gzip_with_trailing_bytes_is_a_400_never_silently_dropped(receiver: Receiver, trailing: bytes) -> None:
    gen_id = f"gen-1790000014-gzipTrailing{len(trailing):07d}"
    raw = gzip.compress(json.dumps(delivery(CODEX, gen_id)).encode()) + trailing
    answer = receiver.post(None, raw=raw, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == f"the body has {len(trailing)} bytes after its last gzip stream"
    assert gen_id not in journaled(receiver.journal)


@pytest.mark.pure
def test_gzip_members_are_read_up_to_their_limit_and_a_bomb_split_into_members_stops_at_the_size_limit() -> None:
    parts = [b'{"n": %d}' % n for n in range(MAX_GZIP_MEMBERS + 1)]
    assert decoded(b"".join(map(gzip.compress, parts[:-1])), "gzip", 1 << 20) == b"".join(parts[:-1])
    with pytest.raises(BodyError, match=f"over {MAX_GZIP_MEMBERS} gzip members"):
        decoded(b"".join(map(gzip.compress, parts)), "gzip", 1 << 20)
    bomb = gzip.compress(b" " * (600 << 10)) * 2
    with pytest.raises(BodyError, match="over 1048576 bytes") as refused:
        decoded(bomb, "gzip", 1 << 20)
    assert refused.value.status == 413 and decoded(bomb, "gzip", 2 << 20) == b" " * (1200 << 10)
