"""Retry, some hours later, an organisation's day whose run failed (capture check red, records missing), while
OpenRouter can still enumerate it: after 31 days its generation ids are gone for good. A day's runs are
those of `daily_ledger` and the asset runs of the UI (a backfill, a Materialize) for its partition.

A retry reuses what the failed run stored (run tag usage_pipeline/refresh=false): it enumerates the day
again and fetches only the records that are missing, so a day that failed on its last 1% costs about 1%."""

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME  # "__ASSET_JOB"

from usage_pipeline.defs.generations import REFRESH_TAG
from usage_pipeline.defs.partitions import OrgDay
from usage_pipeline.defs.summaries import daily_ledger_job
from usage_pipeline.openrouter.day import GENERATION_ID_WINDOW, DayOutOfRange, check_capturable
from usage_pipeline.organisations import DEFAULT_NAME
from usage_pipeline.runs.tags import run_day, run_org
from usage_pipeline.settings import setting

RETRY_AFTER = dt.timedelta(hours=6)  # defaults; the sensor reads USAGE_RECAPTURE_* when it evaluates
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Attempt:
    day: dt.date
    failed: bool
    ended_at: dt.datetime
    org: str = DEFAULT_NAME
    run_id: str = ""


@dataclass(frozen=True)
class GaveUp:
    """A day the sensor will not run again although its latest run failed: the event operators hear of."""

    partition: OrgDay
    attempts: int
    reason: str
    at: dt.datetime  # when it gave up: the last run's end, or when the day left OpenRouter's window
    last_run_id: str


def _by_day(attempts: Iterable[Attempt]) -> dict[tuple[str, dt.date], list[Attempt]]:
    by_day: dict[tuple[str, dt.date], list[Attempt]] = {}
    for attempt in attempts:
        by_day.setdefault((attempt.org, attempt.day), []).append(attempt)
    return by_day


def days_to_recapture(attempts: Iterable[Attempt], now: dt.datetime, *, retry_after: dt.timedelta = RETRY_AFTER,
                      max_attempts: int = MAX_ATTEMPTS) -> list[tuple[OrgDay, int]]:
    """(organisation's day, attempt number) for every one whose latest run failed long enough ago and can
    still be captured; each organisation's days are counted apart."""
    due = []
    for (org, day), runs in sorted(_by_day(attempts).items()):
        latest = max(runs, key=lambda a: a.ended_at)
        if not latest.failed or now - latest.ended_at < retry_after or len(runs) >= max_attempts:
            continue
        try:
            check_capturable(day, now)
        except DayOutOfRange:
            continue
        due.append((OrgDay(org, day), len(runs) + 1))
    return due


def days_given_up(attempts: Iterable[Attempt], now: dt.datetime, *,
                  max_attempts: int = MAX_ATTEMPTS) -> list[GaveUp]:
    """The days `days_to_recapture` will never return again although their latest run failed: every attempt
    used, or the day out of OpenRouter's 31-day window."""
    found = []
    for (org, day), runs in sorted(_by_day(attempts).items()):
        latest = max(runs, key=lambda a: a.ended_at)
        if not latest.failed:
            continue
        left_window = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + GENERATION_ID_WINDOW
        if len(runs) >= max_attempts:
            found.append(GaveUp(OrgDay(org, day), len(runs), f"every attempt used (USAGE_RECAPTURE_MAX_ATTEMPTS="
                                f"{max_attempts})", latest.ended_at, latest.run_id))
        elif left_window < now:
            found.append(GaveUp(OrgDay(org, day), len(runs), "the day left OpenRouter's 31-day window",
                                max(left_window, latest.ended_at), latest.run_id))
    return found


LEDGER_JOBS = (daily_ledger_job.name, IMPLICIT_ASSET_JOB_NAME)  # the latter: the UI's backfills and Materialize


def _attempts(context: SensorEvaluationContext, since: dt.datetime) -> Iterator[Attempt]:
    records = [record for job in LEDGER_JOBS for record in context.instance.get_run_records(
        RunsFilter(job_name=job, created_after=since, statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]))]
    for record in records:
        tags = record.dagster_run.tags
        day, org = run_day(tags), run_org(tags)
        if day is None or org is None or record.end_time is None:
            continue
        yield Attempt(day, record.dagster_run.status == DagsterRunStatus.FAILURE,
                      dt.datetime.fromtimestamp(record.end_time, dt.UTC), org, record.dagster_run.run_id)


@sensor(job=daily_ledger_job, minimum_interval_seconds=3600, default_status=DefaultSensorStatus.RUNNING,
        description="Reruns failed days after USAGE_RECAPTURE_AFTER_HOURS, before they leave the 31-day window.")
def recapture_failed_days(context: SensorEvaluationContext) -> Iterator[RunRequest | SkipReason]:
    now = dt.datetime.now(dt.UTC)
    retry_after = dt.timedelta(hours=setting("USAGE_RECAPTURE_AFTER_HOURS"))
    due = days_to_recapture(_attempts(context, now - dt.timedelta(days=32)), now, retry_after=retry_after,
                            max_attempts=setting("USAGE_RECAPTURE_MAX_ATTEMPTS"))
    if not due:
        yield SkipReason("no failed day is due for a retry")
    for partition, attempt in due:
        yield RunRequest(partition_key=partition.key, run_key=f"recapture:{partition.org}:{partition.day}:{attempt}",
                         tags={"usage_pipeline/recapture_attempt": str(attempt), REFRESH_TAG: "false"})
