"""training_data -> data_splits -> tfidf_features."""


import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, TableColumn, TableSchema, asset

from trending_assets.assets import ML_OWNERS
from trending_assets.assets.ingestion import LABELS_COLUMN, TITLE_COLUMNS
from trending_assets.checks.data_quality import require_training_data_passed
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.dataset import (
    TitleSplits,
    assign_splits,
    genres_present,
    out_of_distribution_table,
)
from trending_assets.ml.landing_file import read_titles
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures
from trending_assets.settings import SettingsResource

# Bump when what the asset computes changes (see trending_assets/assets/__init__.py).
DATA_SPLITS_CODE_VERSION = "2"
TFIDF_FEATURES_CODE_VERSION = "1"

SPLIT_COLUMN = TableColumn("split", "string", description="train, val or test; ood: another "
                                                          "platform's title, scored only")


@asset(
    group_name="features", kinds={"pandas", "parquet"}, owners=ML_OWNERS,
    code_version=DATA_SPLITS_CODE_VERSION,
    metadata={"dagster/column_schema": TableSchema(
        columns=[*TITLE_COLUMNS, LABELS_COLUMN, SPLIT_COLUMN])},
    description="Train/validation/test split by a salted hash of the title id: a title "
                "never changes side when rows are added. Plus, unless data.ood_file is null, "
                "other platforms' titles (split `ood`), scored but never trained on.",
)
def data_splits(
    context: AssetExecutionContext, settings: SettingsResource, training_data: pd.DataFrame
) -> Output[TitleSplits]:
    require_training_data_passed(context.instance)
    config = settings.get()
    split = config.data.split
    taxonomy = Taxonomy.from_config(settings.taxonomy())
    with measured() as figures:
        table = assign_splits(training_data, split.val_fraction, split.test_fraction, split.salt)
        genres = genres_present(table["labels"], taxonomy)
        ood_path = config.data.ood_path()
        if ood_path is not None:
            ood = out_of_distribution_table(
                read_titles(ood_path.read_bytes(), ood_path.name, config.data.landing_limits),
                taxonomy, genres, config.data.ood_max_rows, split.salt)
            table = pd.concat([table, ood], ignore_index=True)
        splits = TitleSplits(table, genres)
    return Output(splits, metadata={
        **as_metadata(lineage(context, config, table_version(table)), figures),
        **{f"{name}_rows": n for name, n in splits.counts().items()},
        "genres": splits.genres,
    })


@asset(
    group_name="features", kinds={"scikitlearn"}, owners=ML_OWNERS,
    code_version=TFIDF_FEATURES_CODE_VERSION,
    description="TF-IDF word n-grams fitted on the train split only.",
)
def tfidf_features(
    context: AssetExecutionContext, settings: SettingsResource, data_splits: TitleSplits
) -> Output[TfidfFeatures]:
    config = settings.get()
    params = config.tfidf
    with measured() as figures:
        encoder = TfidfEncoder.fit(data_splits.texts("train"), params)
        features = TfidfFeatures(
            encoder, data_splits.genres,
            encoder.transform(data_splits.texts("train")), data_splits.labels("train"),
            encoder.transform(data_splits.texts("val")), data_splits.labels("val"),
        )
    return Output(features, metadata={
        **as_metadata(lineage(context, config, table_version(data_splits.table)), figures),
        "n_features": encoder.n_features,
        "params": MetadataValue.json(params.model_dump()),
    })
