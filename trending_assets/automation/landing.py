"""New or changed landing files -> dynamic partitions of raw_titles.

A landing file is work to do when its raw_titles partition has never materialized, or when
its content (sha256) differs from the content the latest materialization read: a file
re-uploaded under the same name is ingested again (a new stored version; older versions
stay under their run id), and a fixed file clears its quarantine record.
"""

from dataclasses import dataclass

from dagster import (
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from resources.storage import ArtifactNotFoundError, ArtifactStore, ArtifactStoreResource
from trending_assets.assets.ingestion import landing_files, raw_titles
from trending_assets.ml.dataset import content_sha256

ingest_job = define_asset_job(
    "ingest_landing_file", selection=AssetSelection.assets(raw_titles),
    description="Read one landing file into its raw_titles partition.",
)
training_job = define_asset_job(
    "train_models", selection=AssetSelection.assets(raw_titles).downstream(include_self=False),
    description="Everything below raw_titles: training data, features, the three models, "
                "their evaluations and gates, and registration.",
)


def landing_keys(store: ArtifactStore) -> list[str]:
    """Landing files in the store; hidden and temporary files are upload leftovers."""
    return [k for k in store.list_keys()
            if not any(part.startswith(".") for part in k.split("/"))]


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
            digest = content_sha256(store.get_bytes(key))
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


def unprocessed_landing_files(store: ArtifactStore, instance: DagsterInstance) -> list[str]:
    """Landing files never ingested, or re-uploaded with new content since."""
    return [c.key for c in landing_changes(store, instance)]


@sensor(job=ingest_job, default_status=DefaultSensorStatus.STOPPED, minimum_interval_seconds=60,
        description="Adds a raw_titles partition per new landing file and ingests new or "
                    "changed files (run key: file + content hash).")
def landing_sensor(context: SensorEvaluationContext, landing: ArtifactStoreResource):
    changes = landing_changes(landing.open(), context.instance)
    new = [c.key for c in changes
           if not context.instance.has_dynamic_partition(landing_files.name, c.key)]
    return SensorResult(
        # The content hash in the run key: a changed file runs again, a repeated tick never.
        run_requests=[RunRequest(run_key=f"{c.key}@{c.sha256[:16]}", partition_key=c.key,
                                 tags={"trending/content_sha256": c.sha256})
                      for c in changes],
        dynamic_partitions_requests=[landing_files.build_add_request(new)] if new else [],
    )
