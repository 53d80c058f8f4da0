"""The alert sensors: each finds one kind of event and POSTs it once to USAGE_ALERT_WEBHOOK_URL (the messages
and rules: usage_pipeline/alerts.py). Running by default when the URL is set when the code location loads,
stopped otherwise. Each tick's result says how many alerts went and which failed to (never the URL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from functools import partial

from dagster import (
    AssetCheckEvaluation,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from usage_pipeline import alerts
from usage_pipeline.budgets import rows_from_metadata
from usage_pipeline.defs.budgets import BUDGET_CHECK
from usage_pipeline.defs.generations import generations
from usage_pipeline.defs.partitions import org_day, organisation_partitions, start_date
from usage_pipeline.defs.recapture import GaveUp, _attempts, days_given_up
from usage_pipeline.settings import setting
from usage_pipeline.webhook import post_alert

INTERVAL_S = 15  # an alert follows its event within about 15 s; each tick is a few indexed queries
HORIZON = dt.timedelta(days=7)  # events older than this are not sent (a daemon down longer starts afresh)
DEFAULT_STATUS = (DefaultSensorStatus.RUNNING if setting("USAGE_ALERT_WEBHOOK_URL") is not None
                  else DefaultSensorStatus.STOPPED)
Event = tuple[str, float, Callable[[], alerts.Alert]]  # key, when it happened, its message (built when sent)


def _deliver(context: SensorEvaluationContext, events: Iterable[Event], now: dt.datetime,
             cursor: alerts.AlertCursor, judged_until: dt.datetime | None = None) -> SensorResult | SkipReason:
    """POST each event not sent yet; each is marked sent, delivered or not, so none is ever sent twice. With
    `judged_until`, nothing before it is looked at again (the cursor's `since` moves there)."""
    url = setting("USAGE_ALERT_WEBHOOK_URL")
    if url is None:
        return SkipReason("USAGE_ALERT_WEBHOOK_URL is not set: no alert is sent")
    sent, failed = 0, []
    for key, at, message in events:
        if not cursor.fresh(key, at):
            continue
        alert = message()
        cursor.mark(key, at)
        reason = post_alert(url, alert)
        if reason is None:
            sent += 1
        else:
            context.log.warning(f"alert not delivered: {alert.kind} {alert.org} {alert.day}: {reason}")
            failed.append(f"{alert.kind} {alert.org} {alert.day} ({reason})")
    cursor.since = max(cursor.since, judged_until.timestamp()) if judged_until else cursor.since
    cursor.prune(now, HORIZON)
    said = f"{sent} alert(s) sent" + (f"; not delivered: {', '.join(failed)}" if failed else "")
    return SensorResult(skip_reason=said, cursor=cursor.encode())


@sensor(minimum_interval_seconds=INTERVAL_S, default_status=DEFAULT_STATUS,
        description="Alerts on every failed blocking check of an organisation-day, and on spend over a budget "
                    "(the spend_within_budgets warning), once each.")
def alert_on_failed_checks(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    now = dt.datetime.now(dt.UTC)
    cursor = alerts.AlertCursor.decode(context.cursor, now)
    events: list[Event] = []
    for check_key in context.repository_def.asset_graph.asset_check_keys if context.repository_def else ():
        for record in context.instance.event_log_storage.get_asset_check_execution_history(
                check_key, limit=200, status={AssetCheckExecutionRecordStatus.FAILED}):
            entry = record.event
            evaluation = entry.dagster_event.event_specific_data if entry and entry.dagster_event else None
            if entry is None or not isinstance(evaluation, AssetCheckEvaluation):
                continue
            if evaluation.check_name != BUDGET_CHECK and not evaluation.blocking:
                continue
            events.append((f"check:{record.id}", entry.timestamp, partial(_check_alert, evaluation)))
    return _deliver(context, events, now, cursor)


def _check_alert(evaluation: AssetCheckEvaluation) -> alerts.Alert:
    values = {name: getattr(value, "value", value) for name, value in evaluation.metadata.items()}
    org, day = alerts.org_and_day(values, evaluation.partition)
    if evaluation.check_name == BUDGET_CHECK:
        return alerts.budget_crossed(org, day, rows_from_metadata(values))
    return alerts.check_failed(evaluation.check_name, org, day, evaluation.description)


@sensor(minimum_interval_seconds=INTERVAL_S, default_status=DEFAULT_STATUS,
        description="Alerts once on each organisation-day the recapture sensor gave up on while it is still "
                    "incomplete (USAGE_RECAPTURE_MAX_ATTEMPTS used, or out of OpenRouter's 31-day window).")
def alert_on_given_up_days(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    now = dt.datetime.now(dt.UTC)
    cursor = alerts.AlertCursor.decode(context.cursor, now)
    given_up = days_given_up(_attempts(context, now - dt.timedelta(days=32)), now,
                             max_attempts=setting("USAGE_RECAPTURE_MAX_ATTEMPTS"))
    events: list[Event] = [(f"gave_up:{g.partition.org}:{g.partition.day}:{g.attempts}", g.at.timestamp(),
                            partial(_gave_up_alert, context.instance, g)) for g in given_up]
    return _deliver(context, events, now, cursor)


def _gave_up_alert(instance: DagsterInstance, g: GaveUp) -> alerts.Alert:
    """Named with what the last run's failed step said (the capture's Failure names what is missing)."""
    return alerts.gave_up(g.partition.org, g.partition.day.isoformat(), g.attempts, g.reason,
                          _last_failure(instance, g.last_run_id))


def _last_failure(instance: DagsterInstance, run_id: str) -> str | None:
    for kind in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
        for entry in instance.all_logs(run_id, of_type=kind):
            event = entry.dagster_event
            data = event.step_failure_data if event and kind == DagsterEventType.STEP_FAILURE else None
            said = (data.user_failure_data.description if data and data.user_failure_data else None) or (
                data.error.message if data and data.error else None) or (event.message if event else None)
            if said:
                return said[:300]
    return None


@sensor(minimum_interval_seconds=INTERVAL_S, default_status=DEFAULT_STATUS,
        description="Alerts once on each organisation-day not captured (influxdb/generations) by "
                    "USAGE_CAPTURE_DEADLINE_UTC the day after, judged at its first tick after the deadline; "
                    "deadlines that passed before its first tick are not judged.")
def alert_on_late_days(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    now = dt.datetime.now(dt.UTC)
    cursor = alerts.AlertCursor.decode(context.cursor, now)
    at: dt.time = setting("USAGE_CAPTURE_DEADLINE_UTC")
    first = dt.date.fromisoformat(start_date())
    days = [day for day in alerts.days_due(dt.datetime.fromtimestamp(cursor.since, dt.UTC), now, at) if day >= first]
    events: list[Event] = []
    if days:
        captured = {(p.org, p.day) for p in map(org_day, context.instance.get_materialized_partitions(generations.key))}
        orgs = context.instance.get_dynamic_partitions(str(organisation_partitions.name))
        events = [(f"late:{org}:{day}", alerts.deadline_of(day, at).timestamp(),
                   partial(alerts.late, org, day, alerts.deadline_of(day, at), now))
                  for org, day in alerts.late_days(orgs, days, captured)]
    return _deliver(context, events, now, cursor, judged_until=now)  # each deadline is judged once


ALERT_SENSORS = [alert_on_failed_checks, alert_on_given_up_days, alert_on_late_days]
