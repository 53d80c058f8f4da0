"""Hypothesis against one running `usage-pipeline receive`: OTLP/JSON bodies valid, mutated and hostile (odd
Unicode, surrogate escapes, huge and non-finite numbers, wrong types, deep nesting, gzip variants) each get a
2xx or a 4xx, never a 5xx; after each, a real delivery gets its 2xx within 1 s; at the end every acknowledged
id is in the journal and the log holds no traceback."""

from __future__ import annotations

import gzip
import itertools
import json
import zlib
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from usage_pipeline.broadcast.receiver import decoded
from usage_pipeline.broadcast.spans import read_delivery
from usage_pipeline_tests.push import (
    CODEX,
    CONNECTION_TEST,
    ERROR_SPAN,
    HAIKU,
    TOKEN,
    Receiver,
    delivery,
    real,
    run_receiver,
)
from usage_pipeline_tests.test_receiver import journaled

KEPT = ["gen_ai.response.id", "trace.metadata.openrouter.api_key_name", "gen_ai.request.model",
        "gen_ai.usage.total_cost", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"]
KINDS = ["stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue", "bytesValue"]
ODD_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates and controls included
    st.sampled_from(["\ud800", "key\udfff", "\x00", "\x1b[2J", "\u202eevil", "\ufeff", "\U0001d518", "é" * 1025,
                     "gen-1-ok", "", " "]))
NUMBERS = st.one_of(st.integers(), st.sampled_from([2**63, -2**63 - 1, 2**64, 10**400, -0.0]),
                    st.floats(allow_nan=True, allow_infinity=True))
JSON_VALUES = st.recursive(st.none() | st.booleans() | NUMBERS | ODD_TEXT,
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(ODD_TEXT, kids, max_size=3),
                           max_leaves=8)
IDS = st.integers(0, 10**9).map(lambda n: f"gen-1790001000-fuzz{n:012d}")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real delivery with one thing changed: a kept attribute, a span field, or a key taken away."""
    body = delivery(draw(st.sampled_from([CODEX, HAIKU, ERROR_SPAN])), draw(IDS))
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    how = draw(st.sampled_from(["attribute", "bare attribute", "span field", "drop"]))
    if how == "attribute":
        value = {draw(st.sampled_from(KINDS)): draw(JSON_VALUES)}
        span["attributes"].append({"key": draw(st.sampled_from(KEPT)), "value": value})
    elif how == "bare attribute":
        span["attributes"].append({"key": draw(st.sampled_from(KEPT) | ODD_TEXT), "value": draw(JSON_VALUES)})
    elif how == "span field":
        span[draw(st.sampled_from(["startTimeUnixNano", "status", "name", "attributes"]))] = draw(JSON_VALUES)
    else:
        parent = draw(st.sampled_from([body, body["resourceSpans"][0], span]))
        parent.pop(draw(st.sampled_from(sorted(parent))))
    return json.dumps(body).encode()


def _valid(gen_id: str, name: str) -> bytes:
    return json.dumps(delivery(HAIKU, gen_id, key_name=name)).encode()


HOSTILE_RAW = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 120_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(4301, 6000).map(lambda n: b'{"resourceSpans": [], "n": ' + b"9" * n + b"}"),
    st.builds(lambda b, cut: b[:cut], mutated(), st.integers(0, 3000)),
    st.builds(lambda body: json.dumps(body).encode(), JSON_VALUES),
    st.just(json.dumps(real(CONNECTION_TEST)).encode()),
)
BODIES = st.one_of(st.builds(_valid, IDS, ODD_TEXT), mutated(), HOSTILE_RAW)


def _encode(body: bytes, how: str) -> tuple[bytes, dict[str, str]]:
    half = len(body) // 2
    wrapped = {"identity": body, "gzip": gzip.compress(body), "deflate": zlib.compress(body),
               "gzip members": gzip.compress(body[:half]) + gzip.compress(body[half:]),
               "gzip trailing": gzip.compress(body) + b"\x00junk", "gzip truncated": gzip.compress(body)[:-5]}[how]
    return wrapped, ({} if how == "identity" else {"Content-Encoding": how.split()[0]})


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    root = tmp_path_factory.mktemp("fuzz")
    with run_receiver(root / "journal.sqlite3", root / "receiver.log") as server:
        yield server


def test_no_body_gets_a_5xx_or_stalls_the_receiver_and_every_acknowledged_id_is_journaled(
        receiver: Receiver) -> None:
    acknowledged: set[str] = set()
    statuses: Counter[int] = Counter()
    checks = (f"gen-1790002{n:03d}-afterFuzz{n:015d}" for n in itertools.count())

    # No shrinking: the receiver is one process with state, so an example that breaks it (a writer that died)
    # shows in the examples after it, which a shrink would blame instead. The first failing example is the one.
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)
    @given(body=BODIES, how=st.sampled_from(["identity", "identity", "gzip", "deflate", "gzip members",
                                             "gzip trailing", "gzip truncated"]))
    def one(body: bytes, how: str) -> None:
        raw, headers = _encode(body, how)
        answer = receiver.post(None, raw=raw, headers=headers)
        statuses[answer.status_code] += 1
        assert 200 <= answer.status_code < 300 or 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        if answer.status_code >= 400:
            assert answer.json()["error"], answer.text
        else:  # the ids it announced, read as the receiver reads them
            unpacked = decoded(raw, headers.get("Content-Encoding", ""), 1 << 30)
            acknowledged.update(span.id for span in read_delivery(json.loads(unpacked)).spans)
        check = next(checks)
        real_one = requests.post(receiver.url, data=_valid(check, "fixture key"), timeout=1,  # within 1 s
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        assert real_one.status_code == 200, real_one.text
        acknowledged.add(check)

    one()
    assert statuses[200] and statuses[400], statuses  # valid, mutated-but-valid and hostile bodies all came
    missing = acknowledged - set(journaled(receiver.journal))
    assert not missing, sorted(missing)[:5]
    assert receiver.health()["journal_writer"] == "running"
    assert "Traceback" not in receiver.log_path.read_text()

