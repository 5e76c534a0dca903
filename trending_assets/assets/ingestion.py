"""Landing files -> raw_titles partitions -> training_data, with the data gates.

raw_titles never raises on bad content: a landing file that cannot be read, or whose batch
suite fails, is quarantined (a record under <artifact root>/quarantine/, the landing file
left untouched) and stores no table, so training_data, which reads every stored partition,
leaves it out. A partition keeps its older accepted version when a new upload of the same
name is quarantined: a bad re-upload never loses rows that were accepted before.
"""

from collections.abc import Iterator
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    asset,
)

from resources.data_records import DataRecordsResource, drift_baseline
from resources.io_manager import StoredAssetsResource
from resources.landing_reader import read_bounded
from resources.storage import ArtifactNotFoundError, ArtifactStoreResource
from trending_assets.assets import DATA_OWNERS
from trending_assets.batches import ingest_order, left_out, stored_batches
from trending_assets.checks.batch_quality import assess_batch
from trending_assets.checks.data_quality import (
    batch_check_spec,
    batch_contributions,
    batch_limits,
    batch_quality_result,
    drift_result,
    evaluate_training_gates,
    training_data_check_specs,
    training_quality_result,
)
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.dataset import build_training_table
from trending_assets.ml.drift import DriftProfile, profile_table
from trending_assets.ml.markdown import md_bullets, md_table
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import Settings, SettingsResource
from trending_assets.skipped_files import SKIPPED_FILES, skipped_files_table, skipped_landing_files

landing_files = DynamicPartitionsDefinition(name="landing_files")

# Bump when what the asset computes changes (see trending_assets/assets/__init__.py).
RAW_TITLES_CODE_VERSION = "1"
TRAINING_DATA_CODE_VERSION = "2"

TITLE_COLUMNS = [
    TableColumn("id", "string", description="the platform's title id (unique per title)"),
    TableColumn("title", "string"),
    TableColumn("kind", "string", description="movie or tv"),
    TableColumn("description", "string", description="the synopsis the models read"),
    TableColumn("genres", "string", description="the platform's raw tags, separated by '|'"),
    TableColumn("year", "int64", description="release year"),
    TableColumn("source", "string", description="where the row came from"),
]
LABELS_COLUMN = TableColumn(
    "labels", "string", description="canonical genres (configs/genres.yaml), separated by '|'")


def _bullets(items: list[str]) -> MetadataValue:
    return MetadataValue.md(md_bullets(items))


@asset(
    partitions_def=landing_files, group_name="ingestion",
    kinds={"pandas", "parquet", "greatexpectations"}, owners=DATA_OWNERS,
    code_version=RAW_TITLES_CODE_VERSION,
    metadata={"dagster/column_schema": TableSchema(columns=TITLE_COLUMNS)},
    check_specs=[batch_check_spec()],
    description="One landing file (CSV, Parquet or JSON Lines) as a table; one partition per "
                "file. A batch that fails its suite is quarantined and stores nothing.",
)
def raw_titles(
    context: AssetExecutionContext, settings: SettingsResource, landing: ArtifactStoreResource,
    data_records: DataRecordsResource,
) -> Iterator[Output[Any] | AssetCheckResult]:
    name = context.partition_key
    config = settings.get()
    taxonomy = Taxonomy.from_config(settings.taxonomy())
    landing_store = landing.open()
    read_limits = config.data.landing_limits
    try:
        stored = read_bounded(landing_store, name, read_limits.max_expanded_bytes)
    except ArtifactNotFoundError as exc:
        raise Failure(f"landing file {landing_store.uri_of(name)} is gone: it was removed "
                      "after its partition was added; nothing to ingest") from exc
    context.log.info(f"raw_titles: reading and checking {name} ({stored.size:,} bytes)")
    with measured() as figures:
        assessment = assess_batch(stored.data, name, taxonomy, batch_limits(config), read_limits,
                                  size_bytes=stored.size, sha256=stored.sha256)
    quarantine = data_records.quarantine()
    load = assessment.load
    common: dict[str, Any] = {
        "landing_file": landing_store.uri_of(name),
        # What orders batches in training_data (see trending_assets/batches.py).
        "landed_at": landing_store.modified_at(name).isoformat(),
        "landing_etag": landing_store.etag(name),
        "content_sha256": load.sha256,
        "format": str(load.format),
        "size_bytes": load.size_bytes,
        "rows_read": assessment.rows,
        "quarantined": assessment.quarantined,
        "warnings": _bullets(assessment.warnings),
    }
    record_uri = None
    if assessment.quarantined:
        record_uri = quarantine.put(assessment.record(
            landing_uri=landing_store.uri_of(name), dagster_run_id=context.run.run_id))
        context.log.warning(f"{name} is quarantined ({assessment.reasons[0]}); "
                            f"record: {record_uri}")
        yield Output(None, metadata={
            **as_metadata(lineage(context, config, load.sha256[:16]), figures), **common,
            "quarantine_record": record_uri,
            "reasons": _bullets(assessment.reasons),
        })
    else:
        cleared = quarantine.clear(name, cleared_by_sha256=load.sha256,
                                   cleared_by_run=context.run.run_id)
        frame = assessment.accepted()
        yield Output(frame, metadata={
            **as_metadata(lineage(context, config, table_version(frame)), figures), **common,
            "rows": len(frame),
            "columns": list(frame.columns),
            "extra_columns": load.extra_columns,
            "quarantine_cleared": cleared,
            "preview": MetadataValue.md("\n".join(md_table(
                list(frame.columns), frame.head(5).itertuples(index=False)))),
        })
    yield batch_quality_result(assessment, record_uri)


def _drift_baseline(stored: StoredAssetsResource, records: DataRecordsResource,
                    config: Settings, taxonomy: Taxonomy,
                    log: Any) -> tuple[DriftProfile | None, str | None]:
    """The profile of the training data this run compares with (resources/data_records.py:
    the last accepted version stored before this run started), or none."""
    baseline = drift_baseline(stored, records.baselines())
    if baseline is None:
        return None, None
    if baseline.profile is not None:
        return DriftProfile.from_json(baseline.profile), baseline.label
    try:
        previous, _ = stored.read_version(["training_data"], baseline.version, pd.DataFrame)
    except Exception as exc:  # a baseline that cannot be read must not stop training
        log.warning(f"drift baseline {baseline.version} cannot be read ({exc}); "
                    "no drift comparison")
        return None, None
    sample_rows = config.data.drift.vocabulary_sample_rows
    return profile_table(previous, sample_rows=sample_rows, taxonomy=taxonomy), baseline.label


def _left_out_table(dropped: dict[str, str]) -> str:
    if not dropped:
        return "none"
    return "\n".join(md_table(("file", "why"), sorted(dropped.items())))


def _quarantine_table(records: dict[str, dict[str, Any]], stored: set[str]) -> str:
    if not records:
        return "none"
    return "\n".join(md_table(
        ("file", "quarantined at", "in training_data", "first reason"),
        [(name, record.get("quarantined_at", "?"),
          "earlier accepted version" if name in stored else "no",
          (record.get("reasons") or ["?"])[0]) for name, record in sorted(records.items())]))


@asset(
    group_name="training_data", kinds={"pandas", "parquet", "greatexpectations"},
    owners=DATA_OWNERS, code_version=TRAINING_DATA_CODE_VERSION,
    metadata={"dagster/column_schema": TableSchema(columns=[*TITLE_COLUMNS, LABELS_COLUMN])},
    check_specs=training_data_check_specs(),
    description="All accepted landing batches (quarantined, retired and removed ones left "
                "out), deduplicated by id (the batch that landed last wins), raw tags mapped "
                "to canonical genres.",
)
def training_data(
    context: AssetExecutionContext, settings: SettingsResource, landing: ArtifactStoreResource,
    data_records: DataRecordsResource, stored_assets: StoredAssetsResource,
    raw_titles: dict[str, pd.DataFrame],
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    config = settings.get()
    taxonomy = Taxonomy.from_config(settings.taxonomy())
    quarantined = data_records.quarantine().active()
    stored = stored_batches(context.instance, stored_assets, raw_titles)
    landing_store = landing.open()
    dropped = left_out(stored, set(landing_store.list_keys()), data_records.retired().active())
    for name, why in dropped.items():
        context.log.info(f"{name} leaves training: {why}")
    skipped = skipped_landing_files(landing_store)
    for key, why in skipped.items():
        context.log.warning(f"landing object {key!r}: {why}")
    order = ingest_order(b for n, b in stored.items() if n not in dropped)
    context.log.info(f"training_data: merging {len(order)} accepted batch(es), "
                     f"{sum(len(raw_titles[k]) for k in order):,} rows; quality and drift checks")
    with measured() as figures:
        table, genres, stats = build_training_table([raw_titles[k] for k in order], taxonomy)
        baseline, baseline_label = _drift_baseline(stored_assets, data_records, config, taxonomy,
                                                   context.log)
        gates = evaluate_training_gates(table, genres, stats, config, taxonomy, baseline,
                                        baseline_label)
        contributions = batch_contributions(gates.quality, [(k, raw_titles[k]) for k in order],
                                            table)
    run_id = context.run.run_id
    baselines = data_records.baselines()
    baselines.save_profile(run_id, gates.profile.to_json())
    data_version = table_version(table)
    yield Output(table, metadata={
        **as_metadata(lineage(context, config, data_version), figures),
        "rows": len(table),
        "batches": order,
        "batch_versions": MetadataValue.json({n: b.to_dict() for n, b in stored.items()}),
        "batches_left_out": MetadataValue.md(_left_out_table(dropped)),
        "quarantined_batches": MetadataValue.md(_quarantine_table(quarantined, set(raw_titles))),
        SKIPPED_FILES: skipped_files_table(skipped),
        "genres": genres,
        "input_rows": stats.input_rows,
        "duplicate_ids_replaced": stats.duplicate_ids_replaced,
        "duplicate_ids_within_batches": stats.duplicate_ids_within_batches,
        "duplicate_ids_across_batches": stats.duplicate_ids_across_batches,
        "duplicate_id_sample": stats.duplicate_id_sample,
        "rows_without_genre": stats.rows_without_genre,
        "rows_with_unknown_tags": stats.rows_with_unknown_tags,
        "unknown_tags": MetadataValue.json(stats.unknown_tags),
        "genres_below_min_support": stats.genres_below_min_support,
        "drift_baseline": gates.baseline_label or "none (first accepted version)",
    })
    if gates.accepted:
        # Written after the output is stored: the next run's drift check compares with this.
        baselines.accept(run_id, data_version=data_version, rows=len(table))
    yield training_quality_result(gates, contributions)
    yield drift_result(gates, dropped)
