"""A year of aggregate-only history and `GET /models`, over real HTTP, against the spec and the ground truth.

Days older than both the generation days and the 31-day window exist only as analytics cells: the 365-day
dimensions see them at day granularity or coarser, generation-level ones never do, and `/_emulator/truth`
names their figures so clients can be checked against them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from openrouter_emulator.process import EmulatorProcess, EmulatorStartError, start_emulator
from openrouter_emulator_tests.support import SpecValidator, call, day_range, iso, query, rows_of, today

METRICS = ["request_count", "total_usage", "tokens_prompt", "tokens_completion", "reasoning_tokens",
           "cached_tokens", "byok_request_count"]


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def year() -> dict[str, str]:
    """The 365 completed days before today."""
    return {"start": iso(midnight(today() - dt.timedelta(days=365))), "end": iso(midnight(today()))}


def history_day() -> dt.date:
    return today() - dt.timedelta(days=100)


def rows(server: EmulatorProcess, body: dict[str, Any], spec: SpecValidator | None = None) -> list[dict[str, Any]]:
    response = query(server, {"limit": 10_000, **body})
    answer = spec.check("/analytics/query", "post", response) if spec else response.json()
    assert response.status_code == 200, answer
    assert answer["data"]["metadata"]["truncated"] is False
    return rows_of(answer)


def per(result: list[dict[str, Any]], dimension: str, metric: str = "request_count") -> dict[Any, float]:
    totals: Counter[Any] = Counter()
    for row in result:
        totals[row[dimension]] += int(row[metric]) if isinstance(row[metric], str) else row[metric]
    return dict(totals)


def test_a_year_adds_up_the_same_at_every_granularity(emu: EmulatorProcess, spec: SpecValidator) -> None:
    by_granularity = {}
    for granularity in ("day", "week", "month", None):
        body = {"metrics": METRICS, "dimensions": ["model"], "time_range": year(),
                **({"granularity": granularity} if granularity else {})}
        result = rows(emu, body, spec)
        assert all(isinstance(r[m], str) for r in result for m in METRICS if m != "total_usage")  # counts: strings
        by_granularity[granularity] = {m: per(result, "model", m) for m in METRICS}
    daily = by_granularity["day"]
    for granularity, totals in by_granularity.items():
        for metric in METRICS:
            if metric == "total_usage":
                assert totals[metric] == pytest.approx(daily[metric], rel=1e-9), granularity
            else:
                assert totals[metric] == daily[metric], (granularity, metric)
    days = {r["date__day"][:10] for r in rows(emu, {"metrics": ["request_count"], "granularity": "day",
                                                    "time_range": year()})}
    history = {(today() - dt.timedelta(days=k)).isoformat() for k in range(32, 366)}  # older than 31 days
    generations = {(today() - dt.timedelta(days=k)).isoformat() for k in (1, 2, 3)}  # the emulator's --days 3
    assert days == history | generations
    weeks = rows(emu, {"metrics": ["request_count"], "granularity": "week", "time_range": year()})
    assert {dt.date.fromisoformat(r["date__week"][:10]).weekday() for r in weeks} == {0}  # ISO weeks: Mondays


def test_a_history_day_agrees_with_its_truth(emu: EmulatorProcess, spec: SpecValidator) -> None:
    day = history_day()
    truth = emu.truth(day)
    assert truth["aggregate_only"] is True and truth["ids"] == [] and truth["count"] > 500
    span = day_range(day)
    by_model = rows(emu, {"metrics": METRICS, "dimensions": ["model"], "granularity": "day", "time_range": span},
                    spec)
    assert {r["date__day"] for r in by_model} == {f"{day.isoformat()}T00:00:00.000Z"}
    assert per(by_model, "model") == truth["by_model_label"]  # labels, as OpenRouter answers
    slug_of = {m["label"]: m["slug"] for m in truth["models"]}
    assert {slug_of[label]: n for label, n in per(by_model, "model").items()} == truth["by_model"]
    for row in by_model:
        assert row["total_usage"] == pytest.approx(truth["by_model_cost"][slug_of[row["model"]]], rel=1e-9)
    for metric, field in (("tokens_prompt", "tokens_prompt"), ("tokens_completion", "tokens_completion"),
                          ("reasoning_tokens", "tokens_reasoning"), ("cached_tokens", "tokens_cached")):
        assert sum(per(by_model, "model", metric).values()) == truth[field] > 0
    by_key = rows(emu, {"metrics": ["request_count"], "dimensions": ["api_key_id"], "time_range": span}, spec)
    assert per(by_key, "api_key_id") == truth["by_api_key"]
    for dimensions in (["user", "workspace"], ["app"], []):
        total = rows(emu, {"metrics": ["request_count", "total_usage"], "dimensions": dimensions, "time_range": span})
        assert sum(int(r["request_count"]) for r in total) == truth["count"]
        assert sum(r["total_usage"] for r in total) == pytest.approx(truth["cost"], rel=1e-9)
    latency = rows(emu, {"metrics": ["avg_latency"], "dimensions": ["model"], "time_range": span})
    assert all(100 < r["avg_latency"] < 10_000 for r in latency)


def test_history_rows_are_labels_or_ids_as_configured_and_filters_take_ids(emu: EmulatorProcess) -> None:
    day = history_day()
    truth = emu.truth(day)
    span = day_range(day)
    emu.configure(analytics_labels=False)
    try:
        raw = rows(emu, {"metrics": ["request_count"], "dimensions": ["model", "api_key_id"], "time_range": span})
    finally:
        emu.reset_config()
    assert set(per(raw, "model")) == {m["permaslug"] for m in truth["models"] if m["slug"] in truth["by_model"]}
    assert set(per(raw, "api_key_id")) == {k["hash"] for k in truth["api_keys"]}
    backend = rows(emu, {"metrics": ["request_count"], "time_range": span,
                         "filters": [{"field": "api_key_id", "operator": "eq", "value": "1001"}]})
    assert int(backend[0]["request_count"]) == truth["by_api_key"]["prod-backend"]
    slugs = ["openai/gpt-4.1", "x-ai/grok-3-mini"]  # filters take ids (slugs), answers are labels
    two = rows(emu, {"metrics": ["request_count"], "dimensions": ["model"], "time_range": span,
                     "filters": [{"field": "model", "operator": "in", "value": slugs}]})
    assert per(two, "model") == {label: truth["by_model_label"][label] for label in ("OpenAI: GPT-4.1",
                                                                                     "xAI: Grok 3 Mini")}


def test_generation_level_queries_never_see_a_history_day(emu: EmulatorProcess, spec: SpecValidator) -> None:
    for dimension in ("generation_id", "provider", "external_user", "finish_reason", "origin"):
        refused = query(emu, {"metrics": ["request_count"], "dimensions": [dimension],
                              "time_range": day_range(history_day())})
        assert refused.status_code == 400 and "31 days" in spec.check("/analytics/query", "post", refused)[
            "error"]["message"]
    newest, gap = today() - dt.timedelta(days=32), today() - dt.timedelta(days=31)
    assert emu.truth(newest)["aggregate_only"] is True  # the newest history day ends 31 days before today...
    assert emu.truth(gap) == {**emu.truth(gap), "aggregate_only": False, "count": 0}  # ...the next is neither
    assert rows(emu, {"metrics": ["request_count"], "time_range": day_range(gap)}) == []
    hourly = rows(emu, {"metrics": ["request_count"], "granularity": "hour", "time_range": day_range(history_day())})
    assert hourly == []  # history is kept per day: finer buckets do not reach it


def test_retention_is_365_whole_days(emu: EmulatorProcess, spec: SpecValidator) -> None:
    oldest = today() - dt.timedelta(days=365)
    start = midnight(oldest)
    body = {"metrics": ["request_count"], "granularity": "day",
            "time_range": {"start": iso(start), "end": iso(start + dt.timedelta(days=1))}}
    first = rows(emu, body, spec)
    assert [r["date__day"] for r in first] == [f"{oldest.isoformat()}T00:00:00.000Z"]
    assert int(first[0]["request_count"]) == emu.truth(oldest)["count"] > 0
    early = {"start": iso(start - dt.timedelta(milliseconds=1)), "end": iso(start + dt.timedelta(days=1))}
    refused = query(emu, {**body, "time_range": early})
    assert refused.status_code == 400
    assert "365 days" in spec.check("/analytics/query", "post", refused)["error"]["message"]


def test_history_days_is_a_runtime_setting(emu: EmulatorProcess) -> None:
    generation_days = sum(emu.truth(today() - dt.timedelta(days=k))["count"] for k in (1, 2, 3))
    try:
        emu.configure(history_days=0)
        assert sum(int(r["request_count"]) for r in rows(emu, {"metrics": ["request_count"],
                                                              "time_range": year()})) == generation_days
        assert emu.truth(history_day())["count"] == 0
        emu.configure(history_days=40)
        days = {r["date__day"][:10] for r in rows(emu, {"metrics": ["request_count"], "granularity": "day",
                                                        "time_range": year()})}
        assert min(days) == (today() - dt.timedelta(days=40)).isoformat() and len(days) == 9 + 3
        for bad in (366, -1, True, "30"):
            with pytest.raises(Exception, match="history_days"):
                emu.configure(history_days=bad)
    finally:
        emu.reset_config()
    assert emu.config()["history_days"] == 365


def test_history_rows_truncate_like_generation_rows(emu: EmulatorProcess) -> None:
    body = {"metrics": ["request_count"], "dimensions": ["model"], "granularity": "day", "time_range": year()}
    whole = rows(emu, body)
    cut = query(emu, {**body, "limit": 100}).json()["data"]
    assert cut["metadata"] == {**cut["metadata"], "truncated": True, "row_count": 100}
    assert cut["data"] == whole[:100]  # the same order: oldest bucket first, busiest first within it


def test_the_same_seed_gives_the_same_history(servers: tuple[EmulatorProcess, EmulatorProcess]) -> None:
    body = {"metrics": METRICS, "dimensions": ["api_key_id"], "granularity": "month", "time_range": year()}
    emu, capped = servers  # two processes, both seed 7
    assert rows(emu, body) == rows(capped, body)
    counts = [emu.truth(today() - dt.timedelta(days=k))["count"] for k in range(50, 64)]
    assert len(set(counts)) > 10 and max(counts) > 1.3 * min(counts)  # days differ: weekends are quieter


def test_history_days_flag_is_checked(tmp_path: Path) -> None:
    with pytest.raises(EmulatorStartError, match="history-days"):
        start_emulator(days=1, extra_args=["--history-days", "366"], log_path=tmp_path / "bad.log")


def test_models_list_names_each_model_three_ways(emu: EmulatorProcess, spec: SpecValidator) -> None:
    answer = spec.check("/models", "get", call(emu, "GET", "/models"))
    catalogue = emu.truth(history_day())["models"]
    assert answer["total_count"] == len(answer["data"]) == len(catalogue) and answer["links"] == {"next": None}
    assert [(m["id"], m["canonical_slug"], m["name"]) for m in answer["data"]] == [
        (m["slug"], m["permaslug"], m["label"]) for m in catalogue]
    assert all(float(m["pricing"]["prompt"]) > 0 for m in answer["data"])
    assert call(emu, "GET", "/models", key="inference").status_code == 200
    assert call(emu, "GET", "/models", key=None).status_code == 401
