"""Optional hyperparameter search for the XGBoost model.

Materialize `xgboost_hyperparameters` on demand: the `tune_xgboost` job (on the stored
features and splits), or alone with its upstream assets. It is not part of train_models or
the weekly schedule. In a run that also trains `xgboost_model` (e.g. "Materialize all" in
the UI) it does nothing and records no materialization: training never waits on a search.

It fits one model per point of a small grid around the configured parameters, ranks them
by validation macro-F1 (thresholds tuned on validation; the test split is never used),
logs every trial to one W&B run and writes the best configuration as a W&B artifact
(`xgboost-hyperparameters`, file best_config.json).

The training asset does not read it on its own (Dagster has no optional asset inputs, and a
silent switch of parameters would bypass the configuration's fingerprint). To apply it, copy
the asset's `settings_overlay` into configs/<env>.yaml, or pass it for one run as the
settings resource's `overrides_json`, e.g. '{"xgboost": {"learning_rate": 0.05, ...}}'.
"""

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetExecutionContext, AssetKey, MetadataValue, Output, asset

from resources.tracking import WandbTracker
from trending_assets.assets import ML_OWNERS
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.tfidf import TfidfFeatures
from trending_assets.ml.xgboost_model import (
    DEFAULT_SEARCH_GRID,
    search_hyperparameters,
)
from trending_assets.settings import SettingsResource

BEST_CONFIG_FILE = "best_config.json"
TRAINING_ASSET = AssetKey("xgboost_model")
# Bump when what the asset computes changes (see trending_assets/assets/__init__.py).
XGBOOST_HYPERPARAMETERS_CODE_VERSION = "1"


def run_trains_xgboost(context: AssetExecutionContext) -> bool:
    """Whether this run also materializes xgboost_model (e.g. "Materialize all")."""
    return TRAINING_ASSET in context.job_def.asset_layer.selected_asset_keys


@asset(group_name="models", kinds={"xgboost", "wandb"}, output_required=False,
       owners=ML_OWNERS, code_version=XGBOOST_HYPERPARAMETERS_CODE_VERSION,
       description="Optional grid search over XGBoost hyperparameters (validation macro-F1); "
                   "every trial logged to W&B, the best configuration written as an artifact.")
def xgboost_hyperparameters(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    tfidf_features: TfidfFeatures, data_splits: TitleSplits,
) -> Iterator[Output[dict]]:
    if run_trains_xgboost(context):
        context.log.info("xgboost_hyperparameters: skipped, this run trains xgboost_model; "
                         "materialize the search on its own")
        return
    config = settings.get()
    base = config.xgboost
    fields = lineage(context, config, table_version(data_splits.table))
    f = tfidf_features
    with tracker.start_run(
        name=f"xgboost-search-{context.run.run_id[:8]}", job_type="tune",
        group=context.run.run_id,
        config={"family": "xgboost", "base": base.model_dump(), "grid": DEFAULT_SEARCH_GRID,
                "lineage": fields},
    ) as run:
        def log_trial(values: dict[str, Any]) -> None:
            run.log(values)
            context.log.info("xgboost trial " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in values.items()))

        with measured() as figures:
            search = search_hyperparameters(
                f.encoder, f.genres, f.x_train, f.y_train, f.x_val, f.y_val, base,
                DEFAULT_SEARCH_GRID, log_fn=log_trial)
        best = search["trials"][search["best_trial"]]
        overlay = {"xgboost": search["best"]}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / BEST_CONFIG_FILE).write_text(json.dumps(overlay, indent=2) + "\n")
            run.log_artifact(Path(tmp), name="xgboost-hyperparameters", kind="config",
                             metadata={"val_macro_f1": best["val_macro_f1"], **fields})
        run.summarize({"best/val_macro_f1": best["val_macro_f1"],
                       "best/val_micro_f1": best["val_micro_f1"],
                       "best/trial": search["best_trial"], "trials": len(search["trials"])})
    value = {**search, "settings_overlay": overlay, "grid": DEFAULT_SEARCH_GRID}
    yield Output(value, metadata={
        **as_metadata(fields, figures),
        "best_val_macro_f1": best["val_macro_f1"],
        "trials": len(search["trials"]),
        "settings_overlay": MetadataValue.md(
            "Apply in `configs/<env>.yaml` (or as `overrides_json`):\n\n```yaml\n"
            + yaml.safe_dump(overlay, sort_keys=False) + "```"),
        "wandb_run": run.path,
    })
