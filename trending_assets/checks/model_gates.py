"""The model gate checks: `<family>_meets_thresholds` on each `<family>_evaluation`.

The criteria themselves (overall, per-slice and per-genre floors) are plain Python in
trending_assets/ml/gate.py; this module turns them into the Dagster check the evaluation
asset declares and yields.
"""

from __future__ import annotations

from dataclasses import asdict

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from trending_assets.ml.gate import criteria_markdown, gate_metrics, value_criteria
from trending_assets.ml.report import EvaluationResult
from trending_assets.settings import GateSettings


def gate_check_name(family: str) -> str:
    """The name of `family`'s value gate check (on the asset `<family>_evaluation`)."""
    return f"{family}_meets_thresholds"


def gate_check_spec(family: str, evaluation_asset: str) -> AssetCheckSpec:
    """The value gate as the evaluation asset declares it. Not blocking: a refused candidate
    is a result, so the run goes on to the registration asset, which judges the same
    criteria, stores nothing for a candidate below them and records the refusal (nothing
    but registration builds on an evaluation's model)."""
    return AssetCheckSpec(
        gate_check_name(family), asset=evaluation_asset, blocking=False,
        description=f"{family}: test macro/micro-F1 overall and per slice, and F1 per "
                    "well-supported genre, at least the configured floors (gates:)",
    )


def gate_result(family: str, result: EvaluationResult, gate: GateSettings) -> AssetCheckResult:
    """The value gate a candidate must pass before registration: overall floors, per-slice
    floors and the per-genre F1 floor, as a WARN when failed (see `gate_check_spec`)."""
    criteria = value_criteria(gate_metrics(result.overall, result.slices), gate)
    failed = [c for c in criteria if c.failed]
    return AssetCheckResult(
        check_name=gate_check_name(family),
        passed=not failed,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(c.reason for c in failed) or "all thresholds met",
        metadata={
            "macro_f1": result.macro_f1, "micro_f1": result.micro_f1,
            "min_macro_f1": gate.min_macro_f1, "min_micro_f1": gate.min_micro_f1,
            "failed": [c.name for c in failed],
            "criteria": MetadataValue.md("\n".join(
                criteria_markdown([asdict(c) for c in criteria]))),
        },
    )
