"""Model training assets: reference (linear), XGBoost and BERT, each tracked in W&B."""

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)

from resources.model_files import local_model_folder
from resources.storage import ArtifactCheckpoints, ArtifactStoreResource
from resources.tracking import TrackedRun, WandbTracker
from trending_assets.assets import ML_OWNERS
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml import families
from trending_assets.ml.bert.checkpoint import discard_checkpoints
from trending_assets.ml.bert.launch import train_bert_processes
from trending_assets.ml.bert.model import BertGenreModel, train_bert
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.families import ModelFamily
from trending_assets.ml.progress import progress_line
from trending_assets.ml.reproduce import base_model_record
from trending_assets.ml.tfidf import TfidfFeatures
from trending_assets.settings import SettingsResource

BERT = families.family("bert")


def training_pool(family: str) -> str:
    """The concurrency pool of a family's training step: the instance allows one step in each
    at a time, so two runs never train the same family at once (configs/dagster*.yaml, Helm)."""
    return f"train_{family}"


def train_tracked(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    family: str, params: Any, data_version: str, fit: Callable[[TrackedRun], Any],
) -> Output:
    """Run `fit(run)` inside a W&B run; return the model with lineage metadata.

    The W&B run id is the family + the Dagster run id, so a retry of the step (same
    Dagster run) logs into the run its first attempt started."""
    config = settings.get()
    fields = lineage(context, config, data_version)
    with tracker.start_run(
        name=f"{family}-{context.run.run_id[:8]}", job_type="train", group=context.run.run_id,
        config={"family": family, "params": params.model_dump(), "lineage": fields},
        run_id=f"{family}-{context.run.run_id}",
    ) as run:
        with measured() as figures:
            model = fit(run)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp))
            run.log_artifact(Path(tmp), name=f"{family}-model", kind="model",
                             metadata={"dagster_run_id": context.run.run_id, **fields})
        run.summarize(figures)
    return Output(model, metadata={
        **as_metadata(fields, figures),
        "params": MetadataValue.json(params.model_dump()),
        "wandb_run": run.path,
        "wandb_dir": MetadataValue.path(run.folder),
    })


def features_model_asset(spec: ModelFamily) -> AssetsDefinition:
    """`<family>_model` for a family that trains on the TF-IDF features (ml/families.py)."""

    @asset(name=f"{spec.name}_model", group_name="models", kinds=set(spec.kinds),
           owners=ML_OWNERS, code_version=spec.code_version, pool=training_pool(spec.name),
           description=spec.description)
    def _model(
        context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
        tfidf_features: TfidfFeatures, data_splits: TitleSplits,
    ) -> Output:
        params = getattr(settings.get(), spec.section)
        return train_tracked(
            context, settings, tracker, spec.name, params, table_version(data_splits.table),
            lambda run: spec.fit(tfidf_features, params, run.log))

    return _model


def build_bert_model(op_tags: Mapping[str, Any] | None = None) -> AssetsDefinition:
    """The bert_model asset; `op_tags` carry its pod (GPU limit, node pool, /dev/shm) as
    `dagster-k8s/config`, built from `k8s:` in configs/ by trending_assets.k8s."""

    @asset(group_name="models", kinds=set(BERT.kinds), owners=ML_OWNERS,
           code_version=BERT.code_version, pool=training_pool(BERT.name),
           op_tags=op_tags, retry_policy=RetryPolicy(max_retries=3, delay=10),
           description=BERT.description)
    def bert_model(
        context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
        artifacts: ArtifactStoreResource, data_splits: TitleSplits,
    ) -> Output[BertGenreModel]:
        config = settings.get()
        params = config.bert
        # An s3:// base model is copied once into the local cache; W&B still records the URI.
        fit_params = params.model_copy(update={"model_path": local_model_folder(
            params.model_path, config.storage.cache, config.storage.s3_endpoint_url)})
        # What training starts from, hashed now: registration records this, not the base folder
        # as it is by then.
        base_model = base_model_record(config.bert.model_dump(), fit_params.model_path)
        store = artifacts.open()
        checkpoints = ArtifactCheckpoints.of_run(store, "bert", context.run.run_id)
        s = data_splits
        figures: dict[str, Any] = {}

        def fit(run: TrackedRun) -> BertGenreModel:
            def log_and_report(metrics: dict[str, float]) -> None:
                line = progress_line(metrics)
                if line is not None:  # the timed line for people; W&B has the step figures
                    context.log.info(f"bert {line}")
                    return
                run.log(metrics)
                # Every epoch and a resumption in the Dagster logs too.
                if {"val/macro_f1", "resumed_from_step"} & set(metrics):
                    context.log.info("bert " + ", ".join(
                        f"{k}={v:.4g}" for k, v in metrics.items()))

            if config.bert.processes == 1:
                training = train_bert(s.texts("train"), s.labels("train"), s.texts("val"),
                                      s.labels("val"), s.genres, fit_params,
                                      log_fn=log_and_report,
                                      checkpoints=checkpoints, tracker_run_id=run.path)
                model = training.model
                figures.update(training.fit.summary())
            else:  # torchrun workers in a subprocess; checkpoints carried over while they train
                model, launched = train_bert_processes(
                    s, fit_params, config.bert.processes, checkpoints, run.path, log_and_report,
                    context.log.debug)
                figures.update(launched)
            run.summarize({"base_model": base_model,
                           **{k: v for k, v in figures.items() if v is not None}})
            model.base_model = base_model
            return model

        output = train_tracked(context, settings, tracker, "bert", params,
                               table_version(s.table), fit)
        discard_checkpoints(checkpoints)  # the model is stored: nothing is left to resume
        return Output(output.value, metadata={
            **output.metadata, "checkpoints": MetadataValue.path(store.uri_of(checkpoints.prefix)),
            "base_model": MetadataValue.json(base_model),
            **{k: v for k, v in figures.items() if v is not None}})

    return bert_model


bert_model = build_bert_model()


def training_assets(bert_op_tags: Mapping[str, Any] | None = None) -> list[AssetsDefinition]:
    """`<family>_model` for every registered family, in registry order: TF-IDF families
    through the generic asset, the text family (BERT) through its own, which launches
    torchrun workers and checkpoints to the artifact store; `bert_op_tags` carry its pod."""
    return [features_model_asset(spec) if spec.input == "tfidf"
            else build_bert_model(bert_op_tags) for spec in families.FAMILIES.values()]
