"""The `generations` asset (an organisation's day of OpenRouter generations upserted into its InfluxDB
database) and its checks, which hold per organisation-day."""

from collections.abc import Iterator, Mapping

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    multi_asset_check,
)

from usage_pipeline.broadcast.coverage import prove_day
from usage_pipeline.day_lock import NIGHTLY_WAIT_S, DayLockError, DayLocks
from usage_pipeline.defs.capture_metadata import as_log_line, capture_metadata
from usage_pipeline.defs.partitions import OrgDay, capturable, ledger_partitions, org_day, settings_checked
from usage_pipeline.defs.resources import (
    BroadcastJournalResource,
    InfluxDBResource,
    OpenRouterResource,
    OrganisationsResource,
)
from usage_pipeline.influx.errors import InfluxError
from usage_pipeline.influx.store import InfluxStore
from usage_pipeline.ledger import record_day
from usage_pipeline.openrouter.counts import api_day_counts
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.reconcile import Verdict, cost_agrees, full_capture, no_duplicates

OPENROUTER_POOL = "openrouter_api"  # captures at once, all organisations together (one per organisation: the
# run queue's limit on the dagster/partition/org tag, dagster.yaml)
REFRESH_TAG = "usage_pipeline/refresh"  # "true": fetch every record again, even those already stored whole


def refresh_asked(tags: Mapping[str, str]) -> bool:
    """Whether a run's tags ask to fetch the stored records again; a value other than true/false fails."""
    value = tags.get(REFRESH_TAG, "false").strip().lower()
    if value not in ("true", "false"):
        raise Failure(description=f"run tag {REFRESH_TAG}={tags[REFRESH_TAG]!r}: must be true or false",
                      allow_retries=False)
    return value == "true"


@asset(
    partitions_def=ledger_partitions,
    # No backfill policy: a UI backfill then makes one run per organisation-day, each with its own check results
    # and Dagster's dagster/partition/org tag, which the run queue's per-organisation limit needs (a policy's
    # runs carry only a partition range).
    pool=OPENROUTER_POOL,
    key_prefix=["influxdb"],
    group_name="ledger",
    kinds={"influxdb"},
    description="Every OpenRouter generation of the organisation's UTC day, upserted into measurement "
                "`generations` of the organisation's own InfluxDB database. "
                "A rerun fetches only the records not already stored whole; run tag "
                f"{REFRESH_TAG}=true fetches them all again.",
)
def generations(context: AssetExecutionContext, openrouter: OpenRouterResource, influxdb: InfluxDBResource,
                broadcast: BroadcastJournalResource, organisations: OrganisationsResource) -> MaterializeResult:
    partition = capturable(context.partition_key)
    day, refresh = partition.day, refresh_asked(context.run.tags)
    with settings_checked():  # every setting, before any query
        configured = organisations.organisations()
        org = configured.get(partition.org)
        influx, source = influxdb.settings(configured, org.name), openrouter.settings(org)
        journal_path = broadcast.journal_path(org)
        locks = DayLocks.beside(journal_path, org.name)  # the organisation's drain takes the same
    try:  # the day's only writer: a drain round writing it is waited for
        with InfluxStore(influx) as store, locks.hold(day, f"nightly run {context.run.run_id[:8]}", NIGHTLY_WAIT_S):
            store.ensure_database(list(influxdb.databases(configured).values()))  # what it cannot hold: refused
            recording = record_day(source, influx, day, refresh=refresh)
            metadata = capture_metadata(org.name, influx.database, recording, store, journal_path)
    except (OpenRouterError, InfluxError, DayLockError) as exc:  # they say what was tried; no secret in them
        raise Failure(description=str(exc)) from None
    context.log.info(f"{partition}: {as_log_line(metadata)}")
    if not recording.complete:
        raise Failure(description=recording.problems(), metadata=metadata)
    return MaterializeResult(metadata=metadata)


def _result(partition: OrgDay, verdict: Verdict, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
            check_name: str | None = None) -> AssetCheckResult:
    """The verdict as the partition's evaluation: its description and metadata name the organisation and day."""
    metadata = {"organisation": partition.org, **verdict.metadata, "result": verdict.description}
    if verdict.diff_markdown:
        metadata["diff"] = MetadataValue.md(verdict.diff_markdown)
    return AssetCheckResult(passed=verdict.passed, severity=severity, metadata=metadata,
                            description=f"{partition.org} {verdict.description}", check_name=check_name)


# Partitioned as the asset (a Dagster preview): each evaluation is its run's organisation-day, shown per partition
# in the UI; blocking is per step, so a red check stops that run's summary alone.
@asset_check(asset=generations, blocking=True, partitions_def=ledger_partitions,
             description="The organisation's database holds exactly one point per generation of the day "
                         "(points == distinct ids).")
def zero_duplicates(context: AssetCheckExecutionContext, influxdb: InfluxDBResource,
                    organisations: OrganisationsResource) -> AssetCheckResult:
    partition = org_day(context.partition_key)
    with settings_checked():
        configured = organisations.organisations()
        store = influxdb.store(configured, partition.org)
    with store:
        return _result(partition, no_duplicates(store, partition.day))


FULL_CAPTURE, COST = "full_capture_matches_openrouter", "cost_matches_openrouter"


@multi_asset_check(
    specs=[
        AssetCheckSpec(FULL_CAPTURE, asset=generations, blocking=True, partitions_def=ledger_partitions,
                       description="The day's distinct stored ids == OpenRouter's analytics count, exactly, and == "
                                   "/activity's requests per model (by slug) within its 30-day window. Analytics' "
                                   "model labels are shown, never matched as names."),
        AssetCheckSpec(COST, asset=generations, partitions_def=ledger_partitions,
                       description="Stored usage (USD) agrees with analytics' total_usage for the day, and per "
                                   "model with /activity's usage."),
    ],
    pool=OPENROUTER_POOL,
)
def checks_against_openrouter(context: AssetCheckExecutionContext, influxdb: InfluxDBResource,
                              openrouter: OpenRouterResource, broadcast: BroadcastJournalResource,
                              organisations: OrganisationsResource) -> Iterator[AssetCheckResult]:
    """Both comparisons with OpenRouter from one read of its counts, inside the `openrouter_api` pool.

    The counts are read live, so rerunning the checks later catches generations that arrived late;
    `duckdb/daily_usage` takes OpenRouter's figures from this check's result in the same run. A day proven
    exact is noted in the push journal, which may then prune its drained ids.
    """
    partition = org_day(context.partition_key)
    with settings_checked():
        configured = organisations.organisations()
        org = configured.get(partition.org)
        client, store = openrouter.client(org), influxdb.store(configured, org.name)
        journal_path = broadcast.journal_path(org)
    with client:  # the organisation's own key: its counts, never another's
        counts = api_day_counts(client, partition.day)
    with store:
        exact = full_capture(store, counts)
        if exact.passed:
            prove_day(journal_path, partition.day)
        yield _result(partition, exact, check_name=FULL_CAPTURE)
        yield _result(partition, cost_agrees(store, counts), AssetCheckSeverity.WARN, check_name=COST)
