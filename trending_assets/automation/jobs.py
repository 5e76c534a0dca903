"""The asset jobs: what the sensors, the schedule, the CLI and the UI launch."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from trending_assets.assets.ingestion import raw_titles
from trending_assets.assets.tuning import xgboost_hyperparameters

ingest_job = define_asset_job(
    "ingest_landing_file", selection=AssetSelection.assets(raw_titles),
    description="Read one landing file into its raw_titles partition.",
)
# The search is on demand only: a step of train_models it would always skip (it never runs
# beside xgboost_model), and the UI showed that skipped step as failed.
training_job = define_asset_job(
    "train_models",
    selection=AssetSelection.assets(raw_titles).downstream(include_self=False)
    - AssetSelection.assets(xgboost_hyperparameters),
    description="Everything below raw_titles: training data, features, the three models, "
                "their evaluations and gates, and registration.",
)
tuning_job = define_asset_job(
    "tune_xgboost", selection=AssetSelection.assets(xgboost_hyperparameters),
    description="The optional XGBoost hyperparameter search on the stored features and "
                "splits; its best configuration is applied by hand (see its metadata).",
)
