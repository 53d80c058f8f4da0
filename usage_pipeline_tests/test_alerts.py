"""Alerts: the messages (Slack's webhook shape, organisation, day and figure, escaped), the deadline rule, the
recapture sensor giving up, the cursor that sends each event once; then the POST against a real local server:
retried, and a failure logged without the URL. (The sensors through a real daemon: test_dagster_dev.)"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from usage_pipeline import alerts
from usage_pipeline.budgets import BudgetRow
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.defs.recapture import Attempt, GaveUp, days_given_up, days_to_recapture
from usage_pipeline.webhook import post_alert

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 20)
HOUR = dt.timedelta(hours=1)
SIX = dt.time(6, 0)


@pytest.mark.pure
def test_a_message_is_slack_shaped_and_names_the_organisation_the_day_and_the_figure() -> None:
    alert = alerts.budget_crossed("acme", "2026-11-20", [BudgetRow("api_key", "prod <&> key", 20, 23.414, 3.414)])
    body = alert.payload()
    assert body["text"] == ("Spend over budget: acme 2026-11-20: API key prod <&> key spent $23.41 of its $20.00 "
                            "daily budget (over by $3.41)")
    assert body["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": "*Spend over budget*"}}
    assert body["blocks"][1]["fields"] == [
        {"type": "mrkdwn", "text": "*Organisation*\nacme"}, {"type": "mrkdwn", "text": "*Day*\n2026-11-20"},
        {"type": "mrkdwn", "text": "*Figure*\nAPI key prod &lt;&amp;&gt; key spent $23.41 of its $20.00 daily "
                                   "budget (over by $3.41)"}]  # mrkdwn escaped; `text` stays plain
    json.dumps(body)  # JSON as it is posted


@pytest.mark.pure
def test_each_kind_of_event_says_its_figure_on_one_line() -> None:
    failed = alerts.check_failed("full_capture_matches_openrouter", "globex", "2026-11-20",
                                 "2026-11-20: 1199 generations stored,\nOpenRouter counts 1200")
    assert failed.text == ("Blocking check failed: globex 2026-11-20: full_capture_matches_openrouter: 2026-11-20: "
                           "1199 generations stored, OpenRouter counts 1200")
    gave_up = alerts.gave_up("globex", "2026-11-20", 5, "every attempt used", "day 2026-11-20 is incomplete: 1 "
                             "generation(s) still missing")
    assert gave_up.figure == ("5 run(s) failed, every attempt used; the last: day 2026-11-20 is incomplete: 1 "
                              "generation(s) still missing")
    late = alerts.late("acme", DAY, alerts.deadline_of(DAY, SIX), dt.datetime(2026, 11, 21, 8, 5, tzinfo=dt.UTC))
    assert late.text == "Day not captured by its deadline: acme 2026-11-20: not captured by 2026-11-21 06:00 UTC " \
                        "(2 h 05 min ago)"
    long = alerts.check_failed("zero_duplicates", "acme", "2026-11-20", "x" * 5000)
    assert len(long.figure) == alerts.MAX_FIGURE and long.figure.endswith("…")


@pytest.mark.pure
def test_an_evaluation_names_its_organisation_and_day_from_metadata_or_partition() -> None:
    assert alerts.org_and_day({"organisation": "acme", "day": "2026-11-20"}, None) == ("acme", "2026-11-20")
    assert alerts.org_and_day({}, "2026-11-20|globex") == ("globex", "2026-11-20")


@pytest.mark.pure
def test_a_day_is_due_once_its_deadline_the_day_after_has_passed() -> None:
    assert alerts.deadline_of(DAY, SIX) == dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC)
    at_0559, at_0600 = dt.datetime(2026, 11, 21, 5, 59, tzinfo=dt.UTC), dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC)
    assert alerts.days_due(at_0559 - HOUR, at_0559, SIX) == []
    assert alerts.days_due(at_0559 - HOUR, at_0600, SIX) == [DAY]
    assert alerts.days_due(at_0600 + dt.timedelta(seconds=1), at_0600 + 20 * HOUR, SIX) == []  # not judged again
    assert alerts.days_due(NOW - 3 * 24 * HOUR, NOW, SIX) == [DAY - dt.timedelta(days=1), DAY,
                                                            DAY + dt.timedelta(days=1)]  # 3 deadlines in 3 days
    midnight = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    assert alerts.days_due(midnight - HOUR, midnight, dt.time(0, 0)) == [DAY]  # 00:00: due as the day ends
    captured = {("acme", DAY)}
    assert alerts.late_days(["globex", "acme"], [DAY], captured) == [("globex", DAY)]


@pytest.mark.pure
def test_the_cursor_sends_each_event_once_and_forgets_after_the_horizon() -> None:
    cursor = alerts.AlertCursor.decode(None, NOW)  # the first tick starts watching: nothing before it is sent
    assert not cursor.fresh("check:1", NOW.timestamp() - 1)
    assert cursor.fresh("check:2", NOW.timestamp())
    cursor.mark("check:2", NOW.timestamp())
    again = alerts.AlertCursor.decode(cursor.encode(), NOW + HOUR)
    assert not again.fresh("check:2", NOW.timestamp()) and again.fresh("check:3", NOW.timestamp())
    later = NOW + dt.timedelta(days=8)
    again.prune(later, dt.timedelta(days=7))
    assert again.sent == {} and not again.fresh("check:2", NOW.timestamp())  # forgotten, and too old to send


@pytest.mark.pure
def test_the_recapture_sensor_gives_up_when_its_attempts_are_used_or_the_day_leaves_the_window() -> None:
    failures = [Attempt(DAY, True, NOW - n * 10 * HOUR, "acme", f"run{n}") for n in range(1, 6)]
    assert days_to_recapture(failures, NOW, max_attempts=5) == []
    assert days_given_up(failures, NOW, max_attempts=5) == [GaveUp(
        OrgDay("acme", DAY), 5, "every attempt used (USAGE_RECAPTURE_MAX_ATTEMPTS=5)", NOW - 10 * HOUR, "run1")]
    assert days_given_up(failures, NOW, max_attempts=6) == []  # still to be retried
    healed = [*failures, Attempt(DAY, False, NOW, "acme")]
    assert days_given_up(healed, NOW, max_attempts=5) == []  # the latest run succeeded: complete
    old = dt.date(2026, 10, 1)
    window = days_given_up([Attempt(old, True, NOW - 30 * 24 * HOUR, "acme", "r")], NOW, max_attempts=5)
    assert [(g.partition, g.attempts, g.reason) for g in window] == [
        (OrgDay("acme", old), 1, "the day left OpenRouter's 31-day window")]
    assert window[0].at == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


class _Webhook:
    """A local HTTP server answering the given statuses in turn (then 200), recording each body."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.bodies = list(statuses), list[dict[str, Any]]()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                webhook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(webhook.statuses.pop(0) if webhook.statuses else 200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/SECRETPATH"


@pytest.fixture
def webhook(request: pytest.FixtureRequest) -> Iterator[_Webhook]:
    server = _Webhook(request.param)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


ALERT = alerts.late("acme", DAY, alerts.deadline_of(DAY, SIX), NOW)


@pytest.mark.parametrize("webhook", [[503, 429]], indirect=True)
def test_a_post_is_retried_through_5xx_and_429(webhook: _Webhook) -> None:
    assert post_alert(webhook.url, ALERT, wait_s=0.01) is None
    assert webhook.bodies == [ALERT.payload()] * 3


@pytest.mark.parametrize("webhook", [[500, 500, 500], [404]], indirect=True)
def test_a_failed_post_is_logged_without_the_url(webhook: _Webhook, caplog: pytest.LogCaptureFixture) -> None:
    refused = webhook.statuses == [404]
    with caplog.at_level(logging.WARNING, logger="usage_pipeline.webhook"):
        reason = post_alert(webhook.url, ALERT, wait_s=0.01)
    assert reason == ("HTTP 404" if refused else "HTTP 500 after 3 attempt(s)")
    assert len(webhook.bodies) == (1 if refused else 3)  # a refusal is not retried
    assert caplog.messages == [f"alert not delivered to USAGE_ALERT_WEBHOOK_URL: late acme 2026-11-20: {reason}"]


def test_no_answer_is_logged_without_the_url(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="usage_pipeline.webhook"):
        closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        url = f"http://127.0.0.1:{closed.server_address[1]}/services/T0/B0/SECRETPATH"
        closed.server_close()  # nothing listens there now
        reason = post_alert(url, ALERT, wait_s=0.01)
    assert reason == "ConnectionError after 3 attempt(s)"
    assert caplog.messages and "SECRETPATH" not in caplog.text and "127.0.0.1" not in caplog.text
