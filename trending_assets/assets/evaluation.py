"""Evaluation assets: thresholds from validation, metrics on test and per slice, a gate."""

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MetadataValue,
    Output,
    asset,
)

from resources.tracking import WandbTracker
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.bert import BertGenreModel
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.linear import LinearGenreModel
from trending_assets.ml.report import EvaluationResult, evaluate
from trending_assets.ml.xgboost_model import XGBoostGenreModel
from trending_assets.settings import GateSettings, SettingsResource

SLICE_COLUMN = "kind"


def score(model: Any, family: str, splits: TitleSplits,
          baseline: EvaluationResult | None) -> EvaluationResult:
    """Evaluate a model on the splits: thresholds on validation, metrics on test."""
    test = splits.part("test")
    return evaluate(
        family, splits.genres,
        splits.labels("val"), model.predict_proba(splits.texts("val")),
        splits.labels("test"), model.predict_proba(splits.texts("test")),
        {f"{SLICE_COLUMN}={v}": (test[SLICE_COLUMN] == v).to_numpy()
         for v in sorted(test[SLICE_COLUMN].unique())},
        baseline=None if baseline is None else {
            "model_name": baseline.model_name, "macro_f1": baseline.macro_f1,
            "micro_f1": baseline.micro_f1,
        },
    )


def gate_result(family: str, result: EvaluationResult, gate: GateSettings) -> AssetCheckResult:
    """The value gate a candidate must pass before registration (blocking)."""
    criteria = [
        ("macro_f1", result.macro_f1, gate.min_macro_f1),
        ("micro_f1", result.micro_f1, gate.min_micro_f1),
    ]
    failed = [f"{name} {value:.3f} < {floor:.3f}" for name, value, floor in criteria
              if value < floor]
    return AssetCheckResult(
        check_name=f"{family}_meets_thresholds",
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(failed) or "all thresholds met",
        metadata={
            **{f"{name}": value for name, value, _ in criteria},
            **{f"min_{name}": floor for name, _, floor in criteria},
        },
    )


def _png_markdown(path: Path) -> str:
    return f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def _evaluate_and_gate(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    family: str, data_splits: TitleSplits, model: Any, baseline: EvaluationResult | None,
) -> Iterator[Output | AssetCheckResult]:
    config = settings.get()
    fields = lineage(context, config, table_version(data_splits.table))
    with measured() as figures:
        result = score(model, family, data_splits, baseline)
    with (
        tracker.start_run(name=f"{family}-eval-{context.run.run_id[:8]}", job_type="evaluate",
                          group=context.run.run_id, config={"family": family, "lineage": fields}
                          ) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        result.save(Path(tmp))
        run.summarize({"test/macro_f1": result.macro_f1, "test/micro_f1": result.micro_f1,
                       **{f"test/{s}/macro_f1": m["macro_f1"] for s, m in result.slices.items()}})
        run.log_artifact(Path(tmp), name=f"{family}-evaluation", kind="evaluation")
        plot = _png_markdown(Path(tmp) / "per_genre_f1.png")
    yield Output(result, metadata={
        **as_metadata(fields, figures),
        "macro_f1": result.macro_f1,
        "micro_f1": result.micro_f1,
        "report": MetadataValue.md(result.to_markdown()),
        "per_genre_f1_plot": MetadataValue.md(plot),
        "wandb_run": run.path,
    })
    yield gate_result(family, result, getattr(config.gates, family))


def evaluation_asset(family: str, model_type: type, baseline_key: str | None) -> AssetsDefinition:
    """`<family>_evaluation` with its blocking `<family>_meets_thresholds` check."""
    name = f"{family}_evaluation"
    common: dict[str, Any] = {
        "name": name, "group_name": "evaluation", "kinds": {"wandb"},
        "check_specs": [AssetCheckSpec(
            f"{family}_meets_thresholds", asset=name, blocking=True,
            description=f"{family}: test macro/micro-F1 at least the configured floors",
        )],
        "description": f"{family} on the test split: micro/macro F1, per genre, per slice; "
                       "thresholds chosen on validation.",
    }
    model_in = AssetIn(f"{family}_model")
    # Annotations are evaluated here (no postponed evaluation in this module): the IO
    # manager loads `model` as `model_type`.
    if baseline_key is None:
        @asset(ins={"model": model_in}, **common)
        def _evaluation(context: AssetExecutionContext, settings: SettingsResource,
                        tracker: WandbTracker, data_splits: TitleSplits, model: model_type):
            yield from _evaluate_and_gate(context, settings, tracker, family, data_splits,
                                          model, None)
    else:
        @asset(ins={"model": model_in, "baseline": AssetIn(baseline_key)}, **common)
        def _evaluation(context: AssetExecutionContext, settings: SettingsResource,
                        tracker: WandbTracker, data_splits: TitleSplits, model: model_type,
                        baseline: EvaluationResult):
            yield from _evaluate_and_gate(context, settings, tracker, family, data_splits,
                                          model, baseline)
    return _evaluation


reference_evaluation = evaluation_asset("reference", LinearGenreModel, None)
xgboost_evaluation = evaluation_asset("xgboost", XGBoostGenreModel, "reference_evaluation")
bert_evaluation = evaluation_asset("bert", BertGenreModel, "reference_evaluation")
