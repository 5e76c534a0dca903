"""Evaluation assets: thresholds from validation, metrics on test and per slice, a gate."""

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from resources.tracking import WandbTracker
from trending_assets.assets import ML_OWNERS
from trending_assets.checks.model_gates import gate_check_spec, gate_result
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml import families
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.report import EvaluationResult, evaluate_on_splits
from trending_assets.settings import SettingsResource

# Bump when what the assets compute changes (see trending_assets/assets/__init__.py).
EVALUATION_CODE_VERSION = "2"


def _png_markdown(path: Path) -> str:
    return f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def _plots_markdown(paths: list[Path]) -> str:
    """The report's PNG plots inline (data URIs): the UI shows them without a file server."""
    titles = EvaluationResult.plot_titles
    return "\n\n".join(f"### {titles.get(p.name, p.stem)}\n\n{_png_markdown(p)}"
                       for p in paths)


def _table_metadata(rows: list[dict[str, Any]]) -> MetadataValue:
    """Rows of the same keys as a Dagster table (sortable in the UI); floats to 3 decimals,
    as in the markdown report."""
    types = {str: "string", int: "int", float: "float", bool: "bool"}
    columns = list(rows[0]) if rows else []
    kinds = {c: next((types[type(r[c])] for r in rows if r[c] is not None), "float")
             for c in columns}
    return MetadataValue.table(
        records=[TableRecord({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items()}) for row in rows],
        schema=TableSchema(columns=[TableColumn(c, kinds[c]) for c in columns]),
    )


def _evaluate_and_gate(
    context: AssetExecutionContext, settings: SettingsResource, tracker: WandbTracker,
    family: str, data_splits: TitleSplits, model: Any, baseline: EvaluationResult | None,
) -> Iterator[Output | AssetCheckResult]:
    config = settings.get()
    fields = lineage(context, config, table_version(data_splits.table))
    context.log.info(f"{family}_evaluation: scoring the splits {data_splits.counts()}, "
                     "slices, plots and the gate")
    with measured() as figures:
        result = evaluate_on_splits(model, family, data_splits, baseline)
    with (
        tracker.start_run(name=f"{family}-eval-{context.run.run_id[:8]}", job_type="evaluate",
                          group=context.run.run_id, config={"family": family, "lineage": fields}
                          ) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        result.save(Path(tmp))
        run.summarize({"test/macro_f1": result.macro_f1, "test/micro_f1": result.micro_f1,
                       **{f"test/{s}/macro_f1": m["macro_f1"] for s, m in result.slices.items()}})
        plots = [Path(tmp) / name for name in result.plot_files]
        run.log_images({f"plots/{p.stem}": p for p in plots})
        run.log_table("per_genre", result.per_genre_rows())
        run.log_artifact(Path(tmp), name=f"{family}-evaluation", kind="evaluation")
        plots_md = _plots_markdown(plots)
    # What a person reads first comes first: the UI lists metadata in this order.
    yield Output(result, metadata={
        "macro_f1": result.macro_f1,
        "micro_f1": result.micro_f1,
        "report": MetadataValue.md(result.to_markdown()),
        "plots": MetadataValue.md(plots_md),
        "per_genre": _table_metadata(result.per_genre_rows()),
        "wandb_run": run.path,
        **as_metadata(fields, figures),
    })
    yield gate_result(family, result, config.gates.of(family))


def evaluation_asset(family: str, model_type: type, baseline_key: str | None) -> AssetsDefinition:
    """`<family>_evaluation` with its `<family>_meets_thresholds` check (WARN when failed)."""
    name = f"{family}_evaluation"
    common: dict[str, Any] = {
        "name": name, "group_name": "evaluation", "kinds": {"scikitlearn", "matplotlib", "wandb"},
        "owners": ML_OWNERS, "code_version": EVALUATION_CODE_VERSION,
        "check_specs": [gate_check_spec(family, name)],
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


def evaluation_assets() -> list[AssetsDefinition]:
    """`<family>_evaluation` for every family in registry order; each one but the
    baseline's is compared with the baseline's evaluation."""
    base = families.baseline()
    return [evaluation_asset(f.name, f.model_type,
                             None if f.name == base else f"{base}_evaluation")
            for f in families.FAMILIES.values()]
