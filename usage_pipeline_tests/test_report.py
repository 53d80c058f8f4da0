"""The usage report's figures and page, without a browser: real DuckDB files written by the pipeline's
own write path, figures held to the ledger frames they were built from, and the CLI's answers."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from openrouter_emulator.dataset import MODELS
from usage_pipeline.cli import main
from usage_pipeline.report import write_report
from usage_pipeline.report.figures import AGGREGATE, EXACT, FLAGGED, OTHER, TOP_MODELS, read_report, top_and_other
from usage_pipeline_tests.usage_history import ledger_frame, usage_dataset, write_today, write_usage_file

UNTIL = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
EXACT_DAYS = [UNTIL - dt.timedelta(days=n) for n in (3, 2, 1, 0)]
AGGREGATE_DAYS = [UNTIL - dt.timedelta(days=n) for n in (7, 6)]  # UNTIL - 5 and - 4 are missing
NAMES = {m.slug: m.name for m in MODELS}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "usage.duckdb"
    write_usage_file(path, exact_days=EXACT_DAYS, aggregate_days=AGGREGATE_DAYS, generations_per_day=600)
    return path


def _copy(path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "usage.duckdb"
    shutil.copy(path, copy)
    return copy


def test_figures_match_the_ledger_they_were_built_from(history: Path) -> None:
    data = read_report(history, 30, UNTIL)
    assert data.period is not None and data.period.first == AGGREGATE_DAYS[0] and data.period.last == UNTIL
    status = data.day_status.set_index("day")["kind"].to_dict()
    assert status == {**{d: AGGREGATE for d in AGGREGATE_DAYS}, **{d: EXACT for d in EXACT_DAYS}}
    totals = data.totals
    assert (totals.days_exact, totals.days_aggregate, totals.days_missing, totals.days_flagged) == (4, 2, 2, 0)
    dataset = usage_dataset(EXACT_DAYS + AGGREGATE_DAYS, 600)
    ledger = pd.concat([ledger_frame(dataset, day).assign(day=day) for day in EXACT_DAYS + AGGREGATE_DAYS])
    assert totals.requests == len(ledger)
    assert totals.spend_usd == pytest.approx(ledger["usage"].sum(), rel=1e-9)
    assert totals.tokens_prompt == ledger["tokens_prompt"].sum()
    # Spend per day and model: by name on both kinds of day (slugs mapped through model_names).
    spend = data.spend_by_model
    assert set(spend["kind"]) == {EXACT, AGGREGATE}
    assert set(spend["model"]) <= {*NAMES.values(), OTHER} and len(set(spend["model"]) - {OTHER}) == 8
    per_day = spend.groupby("day")["usage"].sum()
    for day, rows in ledger.groupby("day"):
        assert per_day[day] == pytest.approx(rows["usage"].sum(), rel=1e-9)
    # Keys and users: exact days only, spend is total_cost.
    exact = ledger[ledger["day"].isin(EXACT_DAYS)]
    assert set(data.spend_by_api_key["day"]) == set(EXACT_DAYS)
    keys = data.spend_by_api_key.groupby("api_key")["total_cost"].sum()
    assert keys.to_dict() == pytest.approx(exact.groupby("api_key")["total_cost"].sum().to_dict(), rel=1e-9)
    assert data.spend_by_user["requests"].sum() == len(exact)
    # Latency: the request-weighted average of daily averages is the period's mean latency.
    top_model = str(exact.groupby("model")["usage"].sum().idxmax())
    latency = data.provider_latency
    assert latency["model"].iloc[0] == NAMES[top_model]
    expected = exact[exact["model"] == top_model].groupby("provider")["latency"].mean()
    shown = latency[latency["model"] == NAMES[top_model]].set_index("provider")["avg_latency_ms"]
    assert shown.to_dict() == pytest.approx(expected.to_dict(), rel=1e-9)


def test_the_window_ends_at_until_and_starts_no_earlier_than_the_history(history: Path) -> None:
    short = read_report(history, 2, UNTIL)
    assert short.period is not None and short.period.days == EXACT_DAYS[-2:]
    assert short.totals.days_exact == 2 and short.totals.days_aggregate == 0
    later = read_report(history, 365, UNTIL + dt.timedelta(days=3))  # days not published yet are missing
    assert later.period is not None and later.period.first == AGGREGATE_DAYS[0]
    assert later.totals.days_missing == 2 + 3


def test_a_file_without_history_tables_or_model_names_shows_stored_slugs(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    write_usage_file(path, exact_days=EXACT_DAYS[-2:], aggregate_days=[], generations_per_day=300)
    data = read_report(path, 365, UNTIL)
    assert set(data.day_status["kind"]) == {EXACT}
    assert set(data.spend_by_model["model"]) <= {*NAMES, OTHER}
    assert "history_by_model" not in _tables(path) and "model_names" not in _tables(path)
    assert write_report(tmp_path / "r.html", duckdb_path=path, days=365, until=UNTIL).data.totals.days_exact == 2


def test_todays_hours_are_named_by_label_top_models_and_the_rest_as_other(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    write_usage_file(path, exact_days=EXACT_DAYS[-1:], aggregate_days=AGGREGATE_DAYS[-1:], generations_per_day=300)
    now = dt.datetime.now(dt.UTC)
    write_today(path, generations_per_day=2000, now=max(now, now.replace(hour=8, minute=0, second=0)))
    with duckdb.connect(str(path), read_only=True) as conn:  # the stored models are permaslugs, as sent
        stored = dict(conn.execute("SELECT model, fsum(usage) FROM usage_today GROUP BY model").fetchall())
    permaslugs = {m.permaslug: m.name for m in MODELS}
    assert set(stored) <= set(permaslugs) and len(stored) > TOP_MODELS + 1
    today = read_report(path, 30, UNTIL).today
    by_label = today.groupby("model")["usage"].sum()
    top = sorted(stored, key=lambda m: -stored[m])[:TOP_MODELS]
    assert list(dict.fromkeys(today["model"])) == [*(permaslugs[m] for m in top), OTHER]  # rank order
    assert by_label.drop(OTHER).to_dict() == pytest.approx({permaslugs[m]: stored[m] for m in top}, rel=1e-9)
    assert by_label.sum() == pytest.approx(sum(stored.values()), rel=1e-9)


def test_days_not_complete_or_not_matching_openrouter_are_flagged(history: Path, tmp_path: Path) -> None:
    path = _copy(history, tmp_path)
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE daily_totals SET api_requests = requests + 3 WHERE day = ?", [EXACT_DAYS[0]])
        conn.execute("UPDATE daily_totals SET capture_status = 'partial' WHERE day = ?", [EXACT_DAYS[1]])
    written = write_report(tmp_path / "r.html", duckdb_path=path, days=30, until=UNTIL)
    flagged = written.data.day_status.set_index("day")
    kind, note = flagged["kind"].to_dict(), flagged["note"].to_dict()
    assert kind[EXACT_DAYS[0]] == FLAGGED and "≠ OpenRouter's" in note[EXACT_DAYS[0]]
    assert note[EXACT_DAYS[1]] == "capture_status 'partial'"
    assert kind[EXACT_DAYS[2]] == EXACT
    page = written.path.read_text()
    assert "Flagged days (2)" in page and "2 flagged" in written.summary()


def test_an_empty_period_renders_a_no_data_page(history: Path, tmp_path: Path) -> None:
    long_ago = write_report(tmp_path / "old.html", duckdb_path=history, days=30, until=dt.date(2020, 1, 31))
    assert long_ago.data.period is None and "no data stored for 2020-01-02 – 2020-01-31" in long_ago.summary()
    page = long_ago.path.read_text()
    assert "<h2>No data</h2>" in page and "Plotly" not in page and long_ago.bytes < 10_000
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()  # a file with no tables at all
    assert write_report(tmp_path / "empty.html", duckdb_path=empty).data.period is None


def test_the_page_is_one_offline_file_and_stored_labels_stay_text(history: Path, tmp_path: Path) -> None:
    path = _copy(history, tmp_path)
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE daily_usage_by_api_key SET api_key = '</script><b>ops</b> & co' WHERE api_key = 'staging'")
    page = write_report(tmp_path / "r.html", duckdb_path=path, days=30, until=UNTIL).path.read_text()
    assert page.count("<script") == 1 + 5 + 1  # plotly.js, five figures, the drawing script
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    blocks = re.findall(r'<script type="application/json" data-figure-for="([^"]+)">(.*?)</script>', page, re.S)
    assert [b[0] for b in blocks] == ["spend-by-model", "requests-vs-openrouter", "spend-by-api-key",
                                      "spend-by-user", "latency-by-provider"]
    keys = [trace["name"] for trace in json.loads(blocks[2][1])["data"]]
    assert any(name.startswith("&lt;/script&gt;&lt;b&gt;ops&lt;/b&gt; &amp; co · $") for name in keys), keys


def test_top_and_other_keeps_the_largest_and_sums_the_rest() -> None:
    frame = pd.DataFrame({"day": [1] * 12 + [2] * 12, "who": [f"k{i}" for i in range(12)] * 2,
                          "cost": [float(i) for i in range(12)] * 2})
    top = top_and_other(frame, "who", "cost", 8, ["day"])
    assert list(dict.fromkeys(top["who"])) == [f"k{i}" for i in range(11, 3, -1)] + [OTHER]
    assert top["cost"].sum() == frame["cost"].sum()
    assert top[top["who"] == OTHER]["cost"].tolist() == [0 + 1 + 2 + 3] * 2
    nine = frame[~frame["who"].isin(["k0", "k1", "k2"])]  # one label beyond the top 8 is shown, not "other"
    assert set(top_and_other(nine, "who", "cost", 8, ["day"])["who"]) == set(nine["who"])


def test_cli_report_writes_the_file_and_says_what_is_in_it(history: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "reports" / "usage.html"
    monkeypatch.setenv("USAGE_DUCKDB_PATH", str(history))
    assert main(["report", "--out", str(out), "--days", "30"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out}" and out.stat().st_size > 1_000_000
    assert re.match(r"\d{4}-\d\d-\d\d – \d{4}-\d\d-\d\d: \d+ days \(4 exact, 2 aggregate, \d+ missing\), "
                    r"[\d,]+ requests, \$[\d,.]+ \(\d+\.\d MB\)$", printed[1]), printed


@pytest.mark.parametrize("arguments, message", [
    (["--duckdb", "/nonexistent/usage.duckdb"], "usage-pipeline report: no DuckDB file at /nonexistent/usage.duckdb"),
    (["--days", "0"], "usage-pipeline report: --days must be a whole number of at least 1, got 0"),
])
def test_cli_report_refuses_bad_input_in_one_line(history: Path, tmp_path: Path, arguments: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_DUCKDB_PATH", str(history))
    assert main(["report", "--out", str(tmp_path / "r.html"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1, error
    assert not (tmp_path / "r.html").exists()


def test_cli_report_names_a_bad_duckdb_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_DUCKDB_PATH", "bad\x01path")
    assert main(["report", "--out", str(tmp_path / "r.html")]) == 2
    expected = "usage-pipeline report: USAGE_DUCKDB_PATH must be a file path, got 'bad\\x01path'\n"
    assert capsys.readouterr().err == expected


def _tables(path: Path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return {row[0] for row in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_every_organisation_summed_or_one_alone(tmp_path: Path) -> None:
    both, alone = tmp_path / "both.duckdb", tmp_path / "acme.duckdb"
    for path, orgs in ((both, (("acme", 7), ("globex", 11))), (alone, (("acme", 7),))):
        for org, seed in orgs:
            write_usage_file(path, exact_days=EXACT_DAYS, aggregate_days=AGGREGATE_DAYS, generations_per_day=300,
                             seed=seed, org=org)
    summed, only = read_report(both, 30, UNTIL), read_report(alone, 30, UNTIL)
    acme, globex = read_report(both, 30, UNTIL, "acme"), read_report(both, 30, UNTIL, "globex")
    assert summed.organisations == ["acme", "globex"] and acme.org == "acme"
    assert acme.totals == only.totals  # acme's figures whatever else the file holds
    assert summed.totals.requests == acme.totals.requests + globex.totals.requests > acme.totals.requests
    assert summed.totals.spend_usd == pytest.approx(acme.totals.spend_usd + globex.totals.spend_usd, rel=1e-9)
    assert (summed.totals.days_exact, summed.totals.days_aggregate) == (4, 2)  # a day per day, not per org
    assert list(summed.day_status["requests"]) == [
        a + g for a, g in zip(acme.day_status["requests"], globex.day_status["requests"], strict=True)]
    assert main(["report", "--duckdb", str(both), "--out", str(tmp_path / "r.html"), "--org", "acme"]) == 0
    assert "organisation acme" in (tmp_path / "r.html").read_text()
    assert main(["report", "--duckdb", str(both), "--out", str(tmp_path / "r.html"), "--org", "initech"]) == 2
