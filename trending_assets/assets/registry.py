"""Registration assets: an immutable registry version per gated model, with lineage."""

import json
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from resources.registry import ModelRegistryResource
from trending_assets.lineage import as_metadata, lineage, measured
from trending_assets.ml.bert import BertGenreModel
from trending_assets.ml.report import EvaluationResult
from trending_assets.ml.xgboost_model import XGBoostGenreModel
from trending_assets.settings import SettingsResource

MODEL_NAME_PREFIX = "trending-now"
REGISTRATION_ALIASES = ["staging"]  # production moves only through a champion comparison


def upstream_record(context: AssetExecutionContext, asset_name: str) -> dict[str, Any]:
    """URI, content hash and W&B run of the stored upstream version this run consumed."""
    event = context.instance.get_latest_materialization_event(AssetKey(asset_name))
    if event is None or event.asset_materialization is None:
        return {}
    meta = event.asset_materialization.metadata
    return {key: meta[key].value for key in ("artifact_uri", "artifact_sha256", "wandb_run",
                                              "data_version", "dagster_run_id") if key in meta}


def registered_model_asset(family: str, model_type: type) -> AssetsDefinition:
    model_name = f"{MODEL_NAME_PREFIX}-{family}"

    @asset(
        name=f"registered_{family}_model", group_name="registry", kinds={"wandb"},
        ins={"model": AssetIn(f"{family}_model"),
             "evaluation": AssetIn(f"{family}_evaluation")},
        description=f"{model_name}: a new immutable registry version (model files, decision "
                    "thresholds, metrics, lineage) once the evaluation gate passed.",
    )
    def _registered(
        context: AssetExecutionContext, settings: SettingsResource,
        registry: ModelRegistryResource, model: model_type, evaluation: EvaluationResult,
    ) -> MaterializeResult:
        config = settings.get()
        upstream = {name: upstream_record(context, name)
                    for name in (f"{family}_model", f"{family}_evaluation", "data_splits")}
        fields = lineage(context, config, upstream["data_splits"].get("data_version", ""))

        def save(directory: Path) -> None:
            model.save(directory)
            evaluation.save(directory / "evaluation")
            (directory / "thresholds.json").write_text(json.dumps(evaluation.thresholds))

        with measured() as figures:
            entry = registry.open().register(
                model_name, save,
                record={
                    "family": family,
                    "metrics": {"macro_f1": evaluation.macro_f1,
                                "micro_f1": evaluation.micro_f1,
                                "slices": {s: {"macro_f1": m["macro_f1"],
                                               "micro_f1": m["micro_f1"]}
                                           for s, m in evaluation.slices.items()}},
                    "thresholds": evaluation.thresholds,
                    "lineage": fields,
                    "upstream": upstream,
                    # Registry links need W&B online; offline runs are linked after `wandb sync`.
                    "wandb": {"run": upstream[f"{family}_model"].get("wandb_run"),
                              "registry_link": "pending" if config.tracking.mode != "online"
                              else "not linked"},
                },
                aliases=REGISTRATION_ALIASES,
                reason=f"passed the value gate (macro-F1 {evaluation.macro_f1:.3f}, "
                       f"micro-F1 {evaluation.micro_f1:.3f})",
            )
        return MaterializeResult(metadata={
            **as_metadata(fields, figures),
            "model_name": model_name,
            "version": entry["version"],
            "aliases": REGISTRATION_ALIASES,
            "macro_f1": evaluation.macro_f1,
            "micro_f1": evaluation.micro_f1,
            "registry_uri": registry.open().store.uri_of(f"registry/{model_name}"),
            "upstream": MetadataValue.json(upstream),
        })

    return _registered


registered_xgboost_model = registered_model_asset("xgboost", XGBoostGenreModel)
registered_bert_model = registered_model_asset("bert", BertGenreModel)
