"""New landing files -> dynamic partitions of raw_titles."""

from dagster import (
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from resources.storage import ArtifactStore, ArtifactStoreResource
from trending_assets.assets.ingestion import landing_files, raw_titles

ingest_job = define_asset_job(
    "ingest_landing_file", selection=AssetSelection.assets(raw_titles),
    partitions_def=landing_files,
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


def unprocessed_landing_files(store: ArtifactStore, instance: DagsterInstance) -> list[str]:
    """Landing files whose raw_titles partition has never materialized successfully."""
    done = instance.get_materialized_partitions(raw_titles.key)
    return [k for k in landing_keys(store) if k not in done]


@sensor(job=ingest_job, default_status=DefaultSensorStatus.STOPPED, minimum_interval_seconds=60,
        description="Adds a raw_titles partition per new landing file and ingests it.")
def landing_sensor(context: SensorEvaluationContext, landing: ArtifactStoreResource):
    new = [k for k in unprocessed_landing_files(landing.open(), context.instance)
           if not context.instance.has_dynamic_partition(landing_files.name, k)]
    return SensorResult(
        run_requests=[RunRequest(run_key=k, partition_key=k) for k in new],
        dynamic_partitions_requests=[landing_files.build_add_request(new)] if new else [],
    )
