"""New or changed landing files -> dynamic partitions of raw_titles.

The landing sensor lists the landing area without reading any file: an object is work to
do when its key is new or its change tag (S3 ETag; size + mtime for a local folder) differs
from the one the sensor last saw. The run key is key + tag, so a re-uploaded file with new
content is ingested again and an unchanged one never twice, even if the cursor were lost.

What the sensor has seen is kept in its cursor per listing scope. With the `dated` layout
(files under a date folder, e.g. `2026-11-28/batch.csv`) a tick lists only the date
folders of the last `lookback_days` and today, so its cost follows the new files, not the
whole history; scopes that leave the window are dropped from the cursor. Nothing depends on
LastModified, so files uploaded within the same second can never be skipped. With the
`flat` layout (the local default) a tick lists the whole area (one stat per file).

The CLI (`make run`) compares content hashes instead (`landing_changes`): it runs once and
reads every new file anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from resources.landing_reader import stored_sha256
from resources.listing import ListedObject, ObjectLister, lister_for
from resources.storage import ArtifactNotFoundError, ArtifactStore, ArtifactStoreResource
from trending_assets.assets.ingestion import landing_files, raw_titles
from trending_assets.automation.jobs import ingest_job
from trending_assets.settings import LandingSensorSettings
from trending_assets.skipped_files import (  # noqa: F401  (skipped_landing_files: the CLI's)
    not_ingested_reason,
    skipped_files_observation,
    skipped_landing_files,
)

# --- the CLI's comparison (content hashes) -------------------------------------------------


def landing_keys(store: ArtifactStore) -> list[str]:
    """Landing files in the store; hidden and temporary files are upload leftovers."""
    return [k for k in store.list_keys() if not_ingested_reason(k) is None]


@dataclass(frozen=True)
class LandingChange:
    key: str
    sha256: str
    reason: str  # "new" or "changed"


def ingested_sha256(instance: DagsterInstance, key: str) -> str | None:
    """The content hash the latest raw_titles materialization of `key` read ('' if it
    predates content hashes), or None when the partition never materialized."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=raw_titles.key, asset_partitions=[key]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("content_sha256")
    return str(value.value) if value is not None else ""


def landing_changes(store: ArtifactStore, instance: DagsterInstance) -> list[LandingChange]:
    """Landing files never ingested, or whose content changed since they were ingested."""
    done = instance.get_materialized_partitions(raw_titles.key)
    changes = []
    for key in landing_keys(store):
        try:
            digest = stored_sha256(store, key)
        except ArtifactNotFoundError:  # removed while we were listing
            continue
        if key not in done:
            changes.append(LandingChange(key, digest, "new"))
            continue
        seen = ingested_sha256(instance, key)
        # '' = ingested before content hashes were recorded: not re-ingested for that alone.
        if seen is not None and seen != "" and seen != digest:
            changes.append(LandingChange(key, digest, "changed"))
    return changes


# --- the sensor ---------------------------------------------------------------------------

ETAG_TAG = "trending/landing_etag"
SKIPS_NAMED = 5  # in a tick's skip reason; the observation's table holds every one


def listing_scopes(settings: LandingSensorSettings, now: datetime) -> list[str]:
    """Key prefixes one tick lists: the whole area, or the date folders in the window."""
    if settings.layout == "flat":
        return [""]
    days = [now.astimezone(UTC) - timedelta(days=n) for n in range(settings.lookback_days, -1, -1)]
    return list(dict.fromkeys(f"{day.strftime(settings.date_format)}/" for day in days))


@dataclass
class LandingCursor:
    """key -> change tag last seen, per listing scope (only scopes still being listed)."""

    seen: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        try:
            value = json.loads(raw)
            return cls({str(s): {str(k): str(t) for k, t in keys.items()}
                        for s, keys in value["seen"].items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            # An unreadable cursor costs one re-listing; the run keys still stop repeats.
            return cls()

    def dump(self) -> str:
        return json.dumps({"seen": self.seen}, sort_keys=True, separators=(",", ":"))


@dataclass
class LandingTick:
    new: list[ListedObject]  # to ingest this tick (new key or changed content)
    cursor: LandingCursor
    listed: int  # objects listed
    deferred: int  # new objects left for the next tick (over max_runs_per_tick)
    skipped: dict[str, str] = field(default_factory=dict)  # new, not ingested -> why


def plan_landing_tick(
    lister: ObjectLister, settings: LandingSensorSettings, cursor: LandingCursor,
    now: datetime, already_ingested: Callable[[ListedObject], bool],
) -> LandingTick:
    """List the scopes in the window and pick what changed since the cursor.

    `already_ingested` is asked only about new or changed objects (it catches a rewrite of
    the same content, or a cold start after the cursor was lost), so a tick's cost follows
    the new objects, not the total."""
    scopes = listing_scopes(settings, now)
    next_seen = {scope: dict(cursor.seen.get(scope, {})) for scope in scopes}
    new: list[ListedObject] = []
    skipped: dict[str, str] = {}
    listed = deferred = 0
    for scope in scopes:
        seen = next_seen[scope]
        for obj in lister.list(scope, page_size=settings.page_size, leftovers=True):
            listed += 1
            if seen.get(obj.key) == obj.etag:
                continue
            reason = not_ingested_reason(obj.key)
            if reason is not None:  # said once per content, like an ingestion
                skipped[obj.key] = reason
                seen[obj.key] = obj.etag
                continue
            if len(new) >= settings.max_runs_per_tick:
                deferred += 1  # not recorded as seen: the next tick picks it up
                continue
            if already_ingested(obj):
                seen[obj.key] = obj.etag
                continue
            new.append(obj)
            seen[obj.key] = obj.etag
    return LandingTick(new, LandingCursor(next_seen), listed, deferred, skipped)


class PartitionIndex:
    """Which landing files have a partition, asked once per file per tick."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self.known: dict[str, bool] = {}

    def __contains__(self, key: str) -> bool:
        if key not in self.known:
            self.known[key] = self.instance.has_dynamic_partition(landing_files.name, key)
        return self.known[key]


def ingested_unchanged(instance: DagsterInstance, store: ArtifactStore, partitions: PartitionIndex,
                       obj: ListedObject) -> bool:
    """Whether the partition exists and its latest ingestion read this very content (a file
    is read only when its partition exists, i.e. for a changed file, not a new one)."""
    if obj.key not in partitions:
        return False
    seen = ingested_sha256(instance, obj.key)
    if not seen:
        return False
    try:
        return stored_sha256(store, obj.key) == seen
    except ArtifactNotFoundError:
        return True  # removed since the listing: nothing to ingest


def landing_run_requests(partitions: PartitionIndex, objects: Iterable[ListedObject],
                         cursor: str | None, skipped: dict[str, str] | None = None
                         ) -> SensorResult:
    """The tick's result; objects newly `skipped` (key -> why) are listed on an observation
    of raw_titles, and in the skip reason of a tick that starts no run."""
    objects, skipped = list(objects), skipped or {}
    added = [o.key for o in objects if o.key not in partitions]
    return SensorResult(
        run_requests=[RunRequest(run_key=f"{o.key}@{o.etag}", partition_key=o.key,
                                 tags={ETAG_TAG: o.etag, "trending/landing_size": str(o.size)})
                      for o in objects],
        dynamic_partitions_requests=[landing_files.build_add_request(added)] if added else [],
        cursor=cursor,
        asset_events=[skipped_files_observation(raw_titles.key, skipped)] if skipped else [],
        skip_reason=None if objects or not skipped else (
            f"no landing file to ingest; {len(skipped)} not ingested (skipped_files on "
            "raw_titles lists them all): " + "; ".join(
                f"{k!r} {why}" for k, why in sorted(skipped.items())[:SKIPS_NAMED])),
    )


def build_landing_sensor(settings: LandingSensorSettings, running: bool) -> SensorDefinition:
    @sensor(
        name="landing_sensor", job=ingest_job,
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=settings.minimum_interval_seconds,
        description="Adds a raw_titles partition per new landing file and ingests new or "
                    "changed files (run key: file + ETag); lists only the date folders in "
                    "the window with the dated layout.",
    )
    def landing_sensor(context: SensorEvaluationContext, landing: ArtifactStoreResource):
        result, tick = landing_tick(context.instance, landing.open(), settings, context.cursor)
        context.log.info(f"listed {tick.listed} landing objects: {len(tick.new)} new or "
                         f"changed, {tick.deferred} left for the next tick")
        for key, reason in tick.skipped.items():
            context.log.warning(f"landing object {key!r}: {reason}")
        return result

    return landing_sensor


def landing_tick(instance: DagsterInstance, store: ArtifactStore,
                 settings: LandingSensorSettings, cursor: str | None,
                 lister: ObjectLister | None = None) -> tuple[SensorResult, LandingTick]:
    """One tick of the landing sensor (the benchmark passes a counting `lister`)."""
    partitions = PartitionIndex(instance)
    tick = plan_landing_tick(
        lister or lister_for(store), settings, LandingCursor.parse(cursor), datetime.now(UTC),
        lambda obj: ingested_unchanged(instance, store, partitions, obj))
    return landing_run_requests(partitions, tick.new, tick.cursor.dump(), tick.skipped), tick
