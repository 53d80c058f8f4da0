"""The emulator's hostile behaviours, each switched at runtime over `/_emulator/config`, over real HTTP.

Account-wide rate limit, CDN HTML error pages, lognormal latency, rows-proportional analytics latency,
hangs, label-named analytics, inclusive time-range ends, the stats counters, seeded reproducibility,
and 1,000 simultaneous connections. JSON answers are validated against the spec.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from openrouter_emulator.process import EmulatorControlError, EmulatorProcess, run_emulator, start_emulator
from openrouter_emulator.server import RuntimeConfig
from openrouter_emulator_tests.support import (
    SpecValidator,
    auth,
    call,
    day_range,
    iso,
    query,
    rows_of,
    yesterday,
)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
ALL_SETTINGS = {"analytics_max_rows", "analytics_rpm", "fresh_404_seconds", "generation_404_first", "fault_rate",
                "latency_median_ms", "latency_sigma", "analytics_ms_per_1k_rows", "hang_share", "hang_seconds",
                "rate_limit_rps", "rate_limit_window_s", "retry_after_share", "html_error_share", "analytics_labels",
                "inclusive_end", "history_days", "throttle_share", "fault_statuses", "first_404_share", "shapes"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    log = tmp_path_factory.mktemp("hostile") / "emulator.log"
    with run_emulator(seed=21, generations_per_day=2000, days=1, extra_args=["--analytics-rpm", "0"],
                      log_path=log) as server:
        yield server


@pytest.fixture
def emu(hostile: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The module's emulator, with settings and faults back to the command line's after each test."""
    yield hostile
    hostile.reset_config()
    hostile.clear_faults()


@pytest.fixture(scope="module")
def some_ids(hostile: EmulatorProcess) -> list[str]:
    return hostile.truth(yesterday())["ids"][:50]


def gen(server: EmulatorProcess, gen_id: str, *, key: str | None = "management",
        session: requests.Session | None = None, timeout: float = 30) -> requests.Response:
    return call(server, "GET", "/generation", key=key, params={"id": gen_id}, session=session, timeout=timeout)


def wait_for_window_start(window_s: float, margin: float = 0.02) -> None:
    """Sleep to just after the next multiple of `window_s` since the epoch (the limiter's windows)."""
    time.sleep(window_s - time.time() % window_s + margin)


def is_html(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").startswith("text/html")


# --- Account-wide rate limit ----------------------------------------------------------------------------


def test_account_limiter_budget_headers_and_one_budget_for_all_keys(emu: EmulatorProcess, spec: SpecValidator,
                                                                     some_ids: list[str]) -> None:
    window, budget = 2.0, 40
    emu.configure(rate_limit_rps=20, rate_limit_window_s=window, retry_after_share=0.5)
    emu.reset_stats()
    keys = ("management", "inference", "sk-or-v1-not-a-key")  # unknown keys count too: it runs before auth
    sent_ms: list[float] = []

    def burst(n: int, session: requests.Session) -> list[requests.Response]:
        answers = []
        for i in range(n):
            sent_ms.append(time.time() * 1000)
            answers.append(gen(emu, some_ids[i % 50], key=keys[i % 3], session=session))
        return answers

    with requests.Session() as session:
        wait_for_window_start(window)
        first = burst(60, session)
        assert time.time() % window < window - 0.3, "the burst must fit one window"
        wait_for_window_start(window)
        second = burst(budget + 1, session)
    for answers in (first, second):
        statuses = [r.status_code for r in answers]
        assert all(s != 429 for s in statuses[:budget]) and all(s == 429 for s in statuses[budget:]), statuses
    assert {r.status_code for r in first[:budget]} == {200, 401}  # accepted requests reached the origin
    # One account-wide budget: every key was refused once it was spent, whoever spent it.
    assert {keys.index(k) for k in keys for i, r in enumerate(first) if r.status_code == 429 and keys[i % 3] == k} \
        == {0, 1, 2}
    # Refused requests consumed nothing: the next window accepted exactly the budget again.
    refused = first[budget:] + second[budget:]
    for response in refused:
        body = spec.check("/generation", "get", response)
        assert body["error"]["code"] == 429 and body["error"]["message"] == "Rate limit exceeded"
        assert response.headers["X-RateLimit-Limit"] == str(budget)
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert "X-RateLimit-Reset" in response.headers
        # The live body repeats the limiter's headers as strings, as OpenRouter's 429 bodies do.
        assert body["error"]["metadata"] == {"headers": {
            "X-RateLimit-Limit": str(budget), "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": response.headers["X-RateLimit-Reset"]}, "provider_name": None}
    for response, sent in zip(first[budget:], sent_ms[budget:60], strict=False):
        reset = int(response.headers["X-RateLimit-Reset"])
        assert reset % int(window * 1000) == 0  # windows are aligned to the epoch
        assert sent < reset <= sent + window * 1000  # in the future, at most one window ahead
    retry_after = [r.headers.get("Retry-After") for r in refused]
    present = [int(v) for v in retry_after if v is not None]
    assert present and len(present) < len(refused), retry_after  # only a share carry Retry-After
    assert all(1 <= v <= math.ceil(window) for v in present)
    stats = emu.stats()
    assert stats["rate_limited"] == len(refused) == stats["by_status"]["429"]


def test_a_limiter_429_skips_the_origin_latency(emu: EmulatorProcess, some_ids: list[str]) -> None:
    if time.time() % 30 > 27:  # the three requests must share one window
        wait_for_window_start(30)
    emu.configure(latency_median_ms=600, latency_sigma=0, rate_limit_rps=1 / 30, rate_limit_window_s=30)
    timings = []
    with requests.Session() as session:
        for i in range(3):
            started = time.perf_counter()
            timings.append((gen(emu, some_ids[i], session=session).status_code, time.perf_counter() - started))
    assert [status for status, _ in timings] == [200, 429, 429]
    assert timings[0][1] >= 0.59
    assert all(0.055 <= seconds < 0.3 for _, seconds in timings[1:]), timings  # a tenth of the 600 ms sample


def test_account_limiter_off_by_default_and_independent_of_analytics_rpm(emu: EmulatorProcess,
                                                                          some_ids: list[str]) -> None:
    assert emu.config()["rate_limit_rps"] == 0
    emu.reset_stats()
    assert all(gen(emu, some_ids[0]).status_code == 200 for _ in range(30))
    emu.configure(analytics_rpm=2)  # the per-key analytics limit still works on its own
    body = {"metrics": ["request_count"], "time_range": day_range(yesterday())}
    statuses = [query(emu, body).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert emu.stats()["rate_limited"] == 0  # that 429 is the origin's, not the account limiter's


# --- CDN HTML error pages -------------------------------------------------------------------------------


def test_a_share_of_429_and_5xx_are_html_pages(emu: EmulatorProcess, spec: SpecValidator,
                                               some_ids: list[str]) -> None:
    emu.configure(rate_limit_rps=5, rate_limit_window_s=1.0, html_error_share=0.5)
    emu.reset_stats()
    with requests.Session() as session:
        wait_for_window_start(1.0)
        limited = [gen(emu, some_ids[i], session=session) for i in range(45)]
    limited = [r for r in limited if r.status_code == 429]
    assert len(limited) >= 30
    emu.configure(rate_limit_rps=0)
    emu.set_faults([{"path": "/generation", "status": 502, "count": 20},
                    {"path": "/generation", "status": 503, "count": 20}])
    failed = [gen(emu, some_ids[i]) for i in range(40)]
    assert [r.status_code for r in failed] == [502] * 20 + [503] * 20
    pages = [r for r in limited + failed if is_html(r)]
    jsons = [r for r in limited + failed if not is_html(r)]
    assert 0.25 < len(pages) / (len(limited) + len(failed)) < 0.75
    for page in pages:
        assert page.headers["Content-Type"] == "text/html; charset=UTF-8"
        assert page.text.lstrip().startswith("<!DOCTYPE html>") and "cloudflare" in page.text.lower()
        with pytest.raises(ValueError):
            page.json()
        assert not any(h.lower().startswith("x-ratelimit") for h in page.headers)
        expected = {429: "Error 1015", 502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}
        assert expected[page.status_code] in page.text
    assert {p.status_code for p in pages} == {429, 502, 503}
    with_retry = [p for p in pages if "Retry-After" in p.headers]
    assert 0 < len(with_retry) < len(pages)  # a Retry-After only sometimes
    for response in jsons:
        body = spec.check("/generation", "get", response, fallback=True)
        assert body["error"]["code"] == response.status_code
    assert {r.status_code for r in jsons} == {429, 502, 503}
    assert emu.stats()["html_errors"] == len(pages)


# --- Latency, hangs ---------------------------------------------------------------------------------------


async def _timed_gets(emu: EmulatorProcess, ids: list[str], n: int, concurrency: int) -> list[float]:
    durations: list[float] = []
    async with aiohttp.ClientSession(headers=auth(emu)) as session:
        async def worker(k: int) -> None:
            for i in range(k, n, concurrency):
                started = time.perf_counter()
                async with session.get(f"{emu.base_url}/generation", params={"id": ids[i % len(ids)]}) as response:
                    await response.read()
                    assert response.status == 200
                durations.append(time.perf_counter() - started)
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return durations


def test_latency_is_lognormal_with_a_tail(emu: EmulatorProcess, some_ids: list[str]) -> None:
    emu.configure(latency_median_ms=50, latency_sigma=0.6)
    durations = sorted(asyncio.run(_timed_gets(emu, some_ids, 200, 25)))
    median, p95, p05 = statistics.median(durations), durations[189], durations[10]
    assert 0.035 < median < 0.085, median  # the median asked for, plus transport
    assert p95 > 1.6 * median, (median, p95)  # lognormal sigma 0.6: p95 ~2.7x the median
    assert p05 < 0.75 * median, (median, p05)
    emu.configure(latency_sigma=0)  # sigma 0: a constant delay
    constant = sorted(asyncio.run(_timed_gets(emu, some_ids, 40, 20)))
    assert constant[0] >= 0.049 and statistics.median(constant) < 0.08


def test_analytics_latency_grows_with_rows(emu: EmulatorProcess, spec: SpecValidator) -> None:
    emu.configure(analytics_ms_per_1k_rows=400)

    def timed(limit: int) -> tuple[float, int]:
        started = time.perf_counter()
        response = query(emu, {"metrics": ["request_count"], "dimensions": ["generation_id"], "limit": limit,
                               "time_range": day_range(yesterday())})
        rows = spec.check("/analytics/query", "post", response)["data"]["metadata"]["row_count"]
        return time.perf_counter() - started, rows

    small, small_rows = timed(10)
    big, big_rows = timed(2000)
    assert (small_rows, big_rows) == (10, 2000)
    assert small < 0.3 and big - small > 0.6, (small, big)  # 2,000 rows: +0.8 s


def test_a_hang_outlasts_the_client_timeout_then_answers_again(emu: EmulatorProcess, some_ids: list[str]) -> None:
    emu.configure(hang_share=1.0, hang_seconds=3)
    emu.reset_stats()
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        gen(emu, some_ids[0], session=requests.Session(), timeout=1)
    assert time.monotonic() - started < 2
    assert emu.stats()["hangs"] == 1
    emu.configure(hang_share=0)
    started = time.monotonic()
    assert gen(emu, some_ids[0]).status_code == 200 and time.monotonic() - started < 1
    deadline = time.monotonic() + 5  # the dropped request does not stay in flight
    while (stats := emu.stats())["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats["in_flight"] == 0 and stats["by_path_status"]["/generation"] == {"200": 1}


# --- Analytics: labels, filters, inclusive ends, metrics ----------------------------------------------------


def test_analytics_labels_on_and_off(emu: EmulatorProcess, spec: SpecValidator, some_ids: list[str]) -> None:
    day = yesterday()
    truth = emu.truth(day)
    catalogue = {m["slug"]: m for m in truth["models"]}
    slugs = {gen(emu, i).json()["data"]["model"] for i in some_ids[:20]}  # what GET /generation names them
    body = {"metrics": ["request_count", "total_usage"], "dimensions": ["model"], "time_range": day_range(day)}
    by_key = {"metrics": ["request_count"], "dimensions": ["api_key_id"], "time_range": day_range(day)}

    assert emu.config()["analytics_labels"] is True  # the default, as OpenRouter
    rows = rows_of(spec.check("/analytics/query", "post", query(emu, body)))
    labels = {r["model"] for r in rows}
    assert not labels & (set(catalogue) | slugs | {m["permaslug"] for m in truth["models"]})
    assert all(re.match(r"^[A-Za-z-]+: \S", label) for label in labels)  # "OpenAI: GPT-4.1"
    slug_of = {m["label"]: slug for slug, m in catalogue.items()}
    assert {slug_of[r["model"]]: int(r["request_count"]) for r in rows} == truth["by_model"]
    assert sum(int(r["request_count"]) for r in rows) == truth["count"]
    assert sum(r["total_usage"] for r in rows) == pytest.approx(truth["cost"], rel=1e-9)
    key_rows = rows_of(spec.check("/analytics/query", "post", query(emu, by_key)))
    assert {r["api_key_id"]: int(r["request_count"]) for r in key_rows} == truth["by_api_key"]

    emu.configure(analytics_labels=False)
    rows = rows_of(spec.check("/analytics/query", "post", query(emu, body)))
    perma = {m["permaslug"]: slug for slug, m in catalogue.items()}
    assert {perma[r["model"]]: int(r["request_count"]) for r in rows} == truth["by_model"]
    key_rows = rows_of(spec.check("/analytics/query", "post", query(emu, by_key)))
    hashes = {k["hash"]: k["label"] for k in truth["api_keys"]}
    assert all(HEX64.match(r["api_key_id"]) for r in key_rows)
    assert {hashes[r["api_key_id"]]: int(r["request_count"]) for r in key_rows} == truth["by_api_key"]


def test_filters_take_underlying_ids_never_labels(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    truth = emu.truth(day)
    gpt = next(m for m in truth["models"] if m["slug"] == "openai/gpt-4.1")
    backend = next(k for k in truth["api_keys"] if k["label"] == "prod-backend")

    def total(field: str, value: Any) -> tuple[int, list[str]]:
        data = spec.check("/analytics/query", "post", query(emu, {
            "metrics": ["request_count"], "time_range": day_range(day),
            "filters": [{"field": field, "operator": "eq", "value": value}]}))["data"]
        return sum(int(r["request_count"]) for r in data["data"]), data.get("warnings", [])

    for value in (gpt["permaslug"], gpt["slug"]):
        assert total("model", value) == (truth["by_model"]["openai/gpt-4.1"], [])
    for value in (backend["numeric_id"], str(backend["numeric_id"]), backend["hash"]):
        assert total("api_key_id", value) == (truth["by_api_key"]["prod-backend"], [])
    for field, label in (("model", gpt["label"]), ("api_key_id", backend["label"])):
        count, warnings = total(field, label)
        assert count == 0 and any("Could not resolve" in w and field in w for w in warnings), warnings


def test_inclusive_end_switch(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = yesterday()
    at = dt.datetime(day.year, day.month, day.day, 13, 7, 11, 654000, tzinfo=dt.UTC)
    # Created times are whole milliseconds (the live API writes created_at to the ms): µs digits are dropped.
    added = set(emu.add_generations(day, 3, at=at + dt.timedelta(microseconds=321)))
    assert len(added) == 3
    record = gen(emu, sorted(added)[0]).json()["data"]
    assert record["created_at"] == f"{day.isoformat()}T13:07:11.654Z"

    def ids(start: dt.datetime, end: dt.datetime) -> set[str]:
        body = spec.check("/analytics/query", "post", query(emu, {
            "metrics": ["request_count"], "dimensions": ["generation_id"],
            "time_range": {"start": iso(start), "end": iso(end)}}))
        return {r["generation_id"] for r in rows_of(body)}

    before = at - dt.timedelta(seconds=5)
    assert emu.config()["inclusive_end"] is False
    assert not added & ids(before, at)  # half-open: created_at == end is outside
    assert added <= ids(at, at + dt.timedelta(seconds=1))
    emu.configure(inclusive_end=True)
    assert added <= ids(before, at)  # inclusive: created_at == end is inside
    assert not added & ids(before, at - dt.timedelta(microseconds=1))
    [row] = rows_of(query(emu, {"metrics": ["request_count"], "time_range": day_range(day)}).json())
    assert int(row["request_count"]) == emu.truth(day)["count"]  # a whole day still counts the day once


def test_total_cost_is_not_a_metric(emu: EmulatorProcess, spec: SpecValidator) -> None:
    refused = query(emu, {"metrics": ["request_count", "total_cost"], "time_range": day_range(yesterday())})
    assert refused.status_code == 400
    assert "Unknown metric" in spec.check("/analytics/query", "post", refused)["error"]["message"]
    meta = spec.check("/analytics/meta", "get", call(emu, "GET", "/analytics/meta"))["data"]
    assert "total_cost" not in {m["name"] for m in meta["metrics"]}


# --- Control API: settings, stats, flags, seeds -----------------------------------------------------------


def test_config_lists_every_setting_and_validates_values(emu: EmulatorProcess) -> None:
    config = emu.config()
    assert set(config) == ALL_SETTINGS
    assert config["analytics_labels"] is True and config["inclusive_end"] is False
    assert config["shapes"] == "live" and config["fault_statuses"] == [500, 502, 503, 524, 529]
    assert emu.configure(inclusive_end=True, analytics_labels=False)["inclusive_end"] is True
    for bad in ({"inclusive_end": 1}, {"inclusive_end": "on"}, {"hang_share": True}, {"latency_median_ms": -1},
                {"html_error_share": 1.5}, {"rate_limit_window_s": 0}, {"no_such_setting": 1},
                {"latency_median_ms": "50"}, {"shapes": "json"}, {"shapes": True}, {"fault_statuses": [200]}):
        with pytest.raises(EmulatorControlError) as refused:
            emu.configure(**bad)
        assert refused.value.status == 400
    with pytest.raises(EmulatorControlError):
        emu.configure(latency_median_ms=50, hang_share=2)  # all or nothing
    assert emu.config() == {**config, "inclusive_end": True, "analytics_labels": False}
    assert emu.reset_config() == config


def test_stats_counters(emu: EmulatorProcess, some_ids: list[str]) -> None:
    emu.reset_stats()
    with requests.Session() as session:
        for i in range(30):
            gen(emu, some_ids[i], session=session)
        call(emu, "GET", "/generation", params={"id": "gen-1-nope"}, session=session)
        time.sleep(1.1)  # let a whole one-second bucket end
        stats = emu.stats()
    assert stats["total"] == 31 and stats["by_path"] == {"/generation": 31}
    assert stats["by_status"] == {"200": 30, "404": 1}
    assert stats["by_path_status"] == {"/generation": {"200": 30, "404": 1}}
    assert 1.1 <= stats["elapsed_s"] < 10
    assert stats["served_per_second"] == pytest.approx(31 / stats["elapsed_s"], rel=0.2)
    assert stats["ok_per_second"] == pytest.approx(30 / stats["elapsed_s"], rel=0.2)
    assert 1 <= stats["peak_served_per_second"] <= 31
    assert stats["rate_limited"] == stats["html_errors"] == stats["hangs"] == stats["in_flight"] == 0
    assert stats["max_in_flight"] == 1


def test_every_flag_is_documented_and_sets_its_setting(tmp_path: Path) -> None:
    help_text = subprocess.run([sys.executable, "-m", "openrouter_emulator", "--help"], capture_output=True,
                               text=True, timeout=60, check=True).stdout
    flags = {"--latency-ms": "latency_median_ms", "--latency-sigma": "latency_sigma",
             "--analytics-ms-per-1k-rows": "analytics_ms_per_1k_rows", "--hang-share": "hang_share",
             "--hang-seconds": "hang_seconds", "--rate-limit": "rate_limit_rps",
             "--rate-limit-window": "rate_limit_window_s", "--retry-after-share": "retry_after_share",
             "--html-error-share": "html_error_share", "--analytics-labels": "analytics_labels",
             "--inclusive-end": "inclusive_end", "--analytics-max-rows": "analytics_max_rows",
             "--analytics-rpm": "analytics_rpm", "--fresh-404-seconds": "fresh_404_seconds",
             "--generation-404-first": "generation_404_first", "--fault-rate": "fault_rate",
             "--history-days": "history_days", "--throttle-share": "throttle_share",
             "--fault-statuses": "fault_statuses", "--first-404-share": "first_404_share", "--shapes": "shapes"}
    assert set(flags.values()) == ALL_SETTINGS == {f for f in RuntimeConfig.__dataclass_fields__}
    flat = re.sub(r"\s+", " ", help_text)
    for flag, key in flags.items():
        assert f"{flag} " in flat and f"[{key}]" in flat, (flag, key)
    assert "--slow-ms" not in help_text
    args = ["--latency-ms", "12.5", "--latency-sigma", "0", "--analytics-ms-per-1k-rows", "3", "--hang-share", "0.1",
            "--hang-seconds", "9", "--rate-limit", "50", "--rate-limit-window", "2", "--retry-after-share", "1",
            "--html-error-share", "0.25", "--analytics-labels", "off", "--inclusive-end", "on", "--history-days", "40"]
    with run_emulator(generations_per_day=10, days=1, extra_args=args, log_path=tmp_path / "flags.log") as server:
        config = server.config()
    assert config == {**config, "latency_median_ms": 12.5, "latency_sigma": 0.0, "analytics_ms_per_1k_rows": 3.0,
                      "hang_share": 0.1, "hang_seconds": 9.0, "rate_limit_rps": 50.0, "rate_limit_window_s": 2.0,
                      "retry_after_share": 1.0, "html_error_share": 0.25, "analytics_labels": False,
                      "inclusive_end": True, "history_days": 40}


def _hostile_run(server: EmulatorProcess, ids: list[str]) -> list[tuple[int, bool, bool]]:
    """(status, HTML page?, Retry-After sent?) of 40 GETs under random faults, the limiter and CDN pages."""
    window = 3600.0
    if time.time() % window > window - 5:  # the run must not straddle the limiter's window boundary
        wait_for_window_start(window)
    server.configure(html_error_share=0.5, retry_after_share=0.5, rate_limit_rps=3 / window,
                     rate_limit_window_s=window, fault_rate=0.3)
    outcome = []
    with requests.Session() as session:
        for i in range(40):
            response = gen(server, ids[i % len(ids)], session=session)
            outcome.append((response.status_code, is_html(response), "Retry-After" in response.headers))
    return outcome


def test_the_same_seed_replays_the_same_hostility(tmp_path: Path) -> None:
    runs = []
    for n, seed in enumerate((5, 5, 6)):
        server = start_emulator(seed=seed, generations_per_day=50, days=1, log_path=tmp_path / f"{n}.log")
        try:
            runs.append(_hostile_run(server, server.truth(yesterday())["ids"]))
        finally:
            server.stop()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {s for s, _, _ in runs[0]} >= {429} and any(html for _, html, _ in runs[0])


# --- Connections ------------------------------------------------------------------------------------------


async def _simultaneous(emu: EmulatorProcess, ids: list[str], n: int) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(connector=connector, headers=auth(emu), timeout=timeout) as session:
        async def one(i: int) -> int:
            async with session.get(f"{emu.base_url}/generation", params={"id": ids[i % len(ids)]}) as response:
                await response.read()
                return response.status
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_a_thousand_simultaneous_connections(emu: EmulatorProcess, some_ids: list[str]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard or (hard == resource.RLIM_INFINITY and soft < 2048):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096 if hard == resource.RLIM_INFINITY else min(hard, 4096), hard))
    emu.configure(latency_median_ms=800, latency_sigma=0)  # every request in flight for 0.8 s: they overlap
    emu.reset_stats()
    started = time.monotonic()
    statuses = asyncio.run(_simultaneous(emu, some_ids, 1000))
    assert statuses == [200] * 1000
    stats = emu.stats()
    assert stats["max_in_flight"] >= 990, stats
    assert stats["by_status"] == {"200": 1000} and stats["in_flight"] == 0
    assert time.monotonic() - started < 30
