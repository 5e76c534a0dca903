"""Landing files -> raw_titles partitions -> training_data."""

import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    asset,
)

from resources.storage import ArtifactStoreResource
from trending_assets.checks.data_quality import training_data_check
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.dataset import build_training_table, read_titles
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import SettingsResource

landing_files = DynamicPartitionsDefinition(name="landing_files")


@asset(
    partitions_def=landing_files, group_name="ingestion", kinds={"pandas"},
    description="One landing file (CSV of titles) as a table; one partition per file.",
)
def raw_titles(
    context: AssetExecutionContext, settings: SettingsResource, landing: ArtifactStoreResource
) -> Output[pd.DataFrame]:
    name = context.partition_key
    with measured() as figures:
        frame = read_titles(landing.open().get_bytes(name), name)
    return Output(frame, metadata={
        **as_metadata(lineage(context, settings.get(), table_version(frame)), figures),
        "landing_file": landing.open().uri_of(name),
        "rows": len(frame),
        "columns": list(frame.columns),
        "preview": MetadataValue.md(frame.head(5).to_markdown(index=False)),
    })


@asset(
    group_name="training_data", kinds={"pandas", "gx"},
    check_specs=[AssetCheckSpec("training_data_quality", asset="training_data", blocking=True,
                                description="Great Expectations suite on the training table")],
    description="All accepted landing batches, deduplicated by id (latest batch wins), "
                "raw tags mapped to canonical genres.",
)
def training_data(
    context: AssetExecutionContext, settings: SettingsResource,
    raw_titles: dict[str, pd.DataFrame],
):
    config = settings.get()
    taxonomy = Taxonomy.from_config(settings.taxonomy())
    # Landing order decides which batch wins on a repeated id.
    order = context.instance.get_dynamic_partitions(landing_files.name)
    batches = [raw_titles[k] for k in sorted(raw_titles, key=order.index)]
    with measured() as figures:
        table, genres, stats = build_training_table(batches, taxonomy)
    yield Output(table, metadata={
        **as_metadata(lineage(context, config, table_version(table)), figures),
        "rows": len(table),
        "batches": list(sorted(raw_titles, key=order.index)),
        "genres": genres,
        "duplicate_ids_replaced": stats.duplicate_ids_replaced,
        "rows_without_genre": stats.rows_without_genre,
        "unknown_tags": MetadataValue.json(stats.unknown_tags),
        "genres_below_min_support": stats.genres_below_min_support,
    })
    yield training_data_check(table, genres, stats.rows_without_genre, config, taxonomy)
