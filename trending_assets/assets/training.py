"""Model training assets: reference (linear), XGBoost and BERT, each tracked in W&B."""

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, MetadataValue, Output, RetryPolicy, asset

from resources.tracking import WandbTracker
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.bert import BertGenreModel, BertParams, train_bert
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.linear import LinearGenreModel, LinearParams
from trending_assets.ml.tfidf import TfidfFeatures
from trending_assets.ml.xgboost_model import XGBoostGenreModel, XGBoostParams
from trending_assets.settings import SettingsResource


def train_tracked(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    family: str, params: Any, data_version: str, fit: Callable[[Callable], Any],
) -> Output:
    """Run `fit(log_fn)` inside a W&B run; return the model with lineage metadata."""
    config = settings.get()
    fields = lineage(context, config, data_version)
    with tracker.start_run(
        name=f"{family}-{context.run.run_id[:8]}", job_type="train", group=context.run.run_id,
        config={"family": family, "params": asdict(params), "lineage": fields},
    ) as run:
        with measured() as figures:
            model = fit(run.log)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp))
            run.log_artifact(Path(tmp), name=f"{family}-model", kind="model",
                             metadata={"dagster_run_id": context.run.run_id, **fields})
        run.summarize(figures)
    return Output(model, metadata={
        **as_metadata(fields, figures),
        "params": MetadataValue.json(asdict(params)),
        "wandb_run": run.path,
        "wandb_dir": MetadataValue.path(run.folder),
    })


@asset(group_name="models", kinds={"scikitlearn", "wandb"},
       description="TF-IDF + one-vs-rest logistic regression: the simplest model that works.")
def reference_model(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    tfidf_features: TfidfFeatures, data_splits: TitleSplits,
) -> Output[LinearGenreModel]:
    params = LinearParams(**settings.get().reference.model_dump())
    f = tfidf_features
    return train_tracked(
        context, settings, tracker, "reference", params, table_version(data_splits.table),
        lambda log: LinearGenreModel.fit(f.encoder, f.genres, f.x_train, f.y_train, params),
    )


@asset(group_name="models", kinds={"xgboost", "wandb"},
       description="XGBoost boosted from out-of-fold linear genre scores, on those scores + "
                   "chi-squared-selected TF-IDF terms (sparse), early-stopped on validation. "
                   "Parameters: settings `xgboost` (the optional xgboost_hyperparameters asset "
                   "suggests an overlay).")
def xgboost_model(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    tfidf_features: TfidfFeatures, data_splits: TitleSplits,
) -> Output[XGBoostGenreModel]:
    params = XGBoostParams(**settings.get().xgboost.model_dump())
    f = tfidf_features
    return train_tracked(
        context, settings, tracker, "xgboost", params, table_version(data_splits.table),
        lambda log: XGBoostGenreModel.fit(
            f.encoder, f.genres, f.x_train, f.y_train, f.x_val, f.y_val, params, log_fn=log),
    )


@asset(group_name="models", kinds={"pytorch", "wandb"},
       retry_policy=RetryPolicy(max_retries=1),
       description="BERT-family transformer (bundled MiniLM by default) fine-tuned for "
                   "multi-label genres.")
def bert_model(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    data_splits: TitleSplits,
) -> Output[BertGenreModel]:
    params = BertParams(**settings.get().bert.model_dump())
    s = data_splits

    def fit(log: Callable) -> BertGenreModel:
        def log_and_report(metrics: dict[str, float]) -> None:
            log(metrics)
            # Every epoch, and every 100 steps, in the Dagster logs too: a person can follow.
            if "val/macro_f1" in metrics or metrics.get("step", 1) % 100 == 0:
                context.log.info("bert " + ", ".join(
                    f"{k}={v:.4g}" for k, v in metrics.items()))

        model, _ = train_bert(s.texts("train"), s.labels("train"), s.texts("val"),
                              s.labels("val"), s.genres, params, log_fn=log_and_report)
        return model

    return train_tracked(context, settings, tracker, "bert", params,
                         table_version(s.table), fit)
