"""What operators hear: one message per event, in the shape of Slack's incoming webhooks, and the bookkeeping
that sends each event exactly once.

The events: a blocking check of an organisation-day failed; a day the recapture sensor gave up on is still
incomplete; an organisation-day not captured by its deadline (USAGE_CAPTURE_DEADLINE_UTC the day after); a
day's spend above a budget. Each message names the organisation, the day and the figure, and nothing secret:
the webhook URL is never part of one. The sensors in `usage_pipeline/defs/alerts.py` find the events; this
module is plain functions, so the messages and the rules are tested without Dagster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from usage_pipeline.budgets import BudgetRow

CHECK_FAILED, BUDGET_CROSSED, GAVE_UP, LATE = "check_failed", "budget_crossed", "gave_up", "late"
HEADLINES = {
    CHECK_FAILED: "Blocking check failed",
    BUDGET_CROSSED: "Spend over budget",
    GAVE_UP: "Day still incomplete: recapture gave up",
    LATE: "Day not captured by its deadline",
}
MAX_FIGURE = 1500  # Slack's section field holds 2,000 characters


@dataclass(frozen=True)
class Alert:
    """One event for operators: what happened, to which organisation's day, and the figure that says so."""

    kind: str  # one of HEADLINES
    org: str
    day: str  # YYYY-MM-DD
    figure: str  # e.g. "API key prod-key spent $23.41 of its $20.00 daily budget (over by $3.41)"

    @property
    def text(self) -> str:
        """The plain line (Slack's notification and fallback text)."""
        return f"{HEADLINES[self.kind]}: {self.org} {self.day}: {self.figure}"

    def payload(self) -> dict[str, Any]:
        """Slack's incoming-webhook JSON: `text`, and blocks with the organisation, day and figure as fields."""
        def field_block(name: str, value: str) -> dict[str, str]:
            return {"type": "mrkdwn", "text": f"*{name}*\n{_escaped(value)}"}

        return {
            "text": self.text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escaped(HEADLINES[self.kind])}*"}},
                {"type": "section", "fields": [field_block("Organisation", self.org), field_block("Day", self.day),
                                               field_block("Figure", self.figure)]},
            ],
        }


def _escaped(text: str) -> str:
    """Slack's mrkdwn reads &, < and > as markup; a key label or user id may hold them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str | None, limit: int = MAX_FIGURE) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def check_failed(check_name: str, org: str, day: str, description: str | None) -> Alert:
    return Alert(CHECK_FAILED, org, day, _one_line(f"{check_name}: {description or 'failed (no description)'}"))


def budget_crossed(org: str, day: str, crossed: Iterable[BudgetRow]) -> Alert:
    return Alert(BUDGET_CROSSED, org, day, _one_line("; ".join(row.sentence() for row in crossed)))


def gave_up(org: str, day: str, attempts: int, reason: str, last_failure: str | None) -> Alert:
    figure = f"{attempts} run(s) failed, {reason}"
    if last_failure:
        figure += f"; the last: {last_failure}"
    return Alert(GAVE_UP, org, day, _one_line(figure))


def late(org: str, day: dt.date, deadline: dt.datetime, now: dt.datetime) -> Alert:
    minutes = max(0, int((now - deadline).total_seconds() // 60))
    return Alert(LATE, org, day.isoformat(), f"not captured by {deadline:%Y-%m-%d %H:%M} UTC "
                                               f"({minutes // 60} h {minutes % 60:02d} min ago)")


def deadline_of(day: dt.date, at: dt.time) -> dt.datetime:
    """When organisation-day `day` should be captured: `at` (UTC) on the day after."""
    return dt.datetime.combine(day + dt.timedelta(days=1), at, tzinfo=dt.UTC)


def days_due(since: dt.datetime, now: dt.datetime, at: dt.time) -> list[dt.date]:
    """The days whose deadline passed in [since, now], oldest first."""
    day, days = (since - dt.timedelta(days=2)).date(), []
    while day < now.date():
        if since <= deadline_of(day, at) <= now:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def late_days(orgs: Iterable[str], days: Iterable[dt.date],
              captured: set[tuple[str, dt.date]]) -> list[tuple[str, dt.date]]:
    """(organisation, day) of every day due that the organisation has not captured."""
    days = list(days)
    return [(org, day) for org in sorted(orgs) for day in days if (org, day) not in captured]


@dataclass
class AlertCursor:
    """A sensor's memory, kept in its Dagster cursor: events before `since` are never sent (a sensor turned on
    does not replay history: its first tick only starts watching), and `sent` holds each event sent, by key,
    with its time. Events older than the horizon are forgotten and `since` moves past them, so the cursor
    stays small and a forgotten event cannot be sent again."""

    since: float  # a timestamp
    sent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def decode(cls, text: str | None, now: dt.datetime) -> AlertCursor:
        if not text:
            return cls(now.timestamp())
        data = json.loads(text)
        return cls(float(data["since"]), {str(k): float(v) for k, v in data.get("sent", {}).items()})

    def encode(self) -> str:
        return json.dumps({"since": self.since, "sent": self.sent}, sort_keys=True)

    def fresh(self, key: str, at: float) -> bool:
        """Whether the event `key` at time `at` is to be sent: after `since` and not sent yet."""
        return at >= self.since and key not in self.sent

    def mark(self, key: str, at: float) -> None:
        self.sent[key] = at

    def prune(self, now: dt.datetime, horizon: dt.timedelta) -> None:
        oldest = (now - horizon).timestamp()
        self.since = max(self.since, oldest)
        self.sent = {key: at for key, at in self.sent.items() if at >= oldest}


def org_and_day(metadata: Mapping[str, Any], partition: str | None) -> tuple[str, str]:
    """An evaluation's organisation and day: its metadata's (our checks write both), else its partition key
    (`2026-11-20|acme`)."""
    day, _, org = (partition or "").partition("|")
    return str(metadata.get("organisation") or org or "?"), str(metadata.get("day") or day or "?")
