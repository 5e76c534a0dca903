"""The data gates as Dagster check results: landing batches, training_data, drift.

- `raw_titles_batch_quality` (per landing file, non-blocking): the batch suite; a failing
  batch is quarantined by the asset, so the check reports rather than stops anything.
- `training_data_quality` (blocking): the training table suite.
- `training_data_drift` (blocking): drift against the last accepted training data; WARN
  above the warn level (reported, nothing stops), ERROR above the error level (blocks).

Every result carries metadata a person can read in the UI: which expectation, observed
value, expected range, and sample offending rows. The UI renders a check's description as
markdown too, and descriptions quote values and file names from landing files: they go
through `md_text` like every other markdown built from outside text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    MetadataValue,
)

from trending_assets.checks.batch_quality import BatchAssessment
from trending_assets.checks.batch_suite import BatchLimits
from trending_assets.checks.outcomes import SuiteOutcome, plural
from trending_assets.checks.training_suite import TrainingLimits, validate_training_table
from trending_assets.ml import drift
from trending_assets.ml.dataset import TrainingTableStats
from trending_assets.ml.markdown import md_bullets, md_table, md_text
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import Settings

BATCH_CHECK = "raw_titles_batch_quality"
QUALITY_CHECK = "training_data_quality"
DRIFT_CHECK = "training_data_drift"
DRIFT_METRICS = ("genre_psi", "length_psi", "vocabulary_novelty")
TRAINING_DATA = AssetKey("training_data")


def batch_check_spec() -> AssetCheckSpec:
    """The batch suite as raw_titles declares it."""
    return AssetCheckSpec(
        BATCH_CHECK, asset="raw_titles", blocking=False,
        description="Great Expectations suite on one landing batch; a failing batch is "
                    "quarantined (not blocking: good batches must never wait for a bad one)")


def training_data_check_specs() -> list[AssetCheckSpec]:
    """The blocking gates as training_data declares them: the suite and drift."""
    return [
        AssetCheckSpec(QUALITY_CHECK, asset=TRAINING_DATA, blocking=True,
                       description="Great Expectations suite on the training table"),
        AssetCheckSpec(DRIFT_CHECK, asset=TRAINING_DATA, blocking=True,
                       description="Drift against the last accepted training data: WARN above "
                                   "the warn levels, blocking ERROR above the error levels"),
    ]


class TrainingDataBlocked(RuntimeError):
    """The stored training_data failed a blocking check: nothing is built from it."""


def require_training_data_passed(instance: DagsterInstance) -> None:
    """Refuse to build on the stored training_data unless its blocking checks passed.

    Within one run Dagster itself skips what lies below a failed blocking check; a later
    run that starts below training_data (a retrain request reusing the data version, a
    selection in the UI) would otherwise load the stored version that failed, because the
    IO manager stores the table before the checks are evaluated."""
    event = instance.get_latest_materialization_event(TRAINING_DATA)
    if event is None:
        return  # nothing stored: loading it fails on its own, naming the asset
    # The check results of the run that stored this version (in-asset checks: same step).
    evaluations = {}
    for entry in instance.all_logs(event.run_id,
                                   of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if evaluation is not None and evaluation.asset_key == TRAINING_DATA:
            evaluations[evaluation.check_name] = evaluation
    problems = []
    for check in (QUALITY_CHECK, DRIFT_CHECK):
        evaluation = evaluations.get(check)
        if evaluation is None:
            problems.append(f"{check} was never evaluated for it")
        elif not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR:
            problems.append(f"{check} failed: {evaluation.description}")
    if problems:
        raise TrainingDataBlocked(
            f"the stored training_data (run {event.run_id}) did not pass its blocking checks: "
            + "; ".join(problems) + ". Nothing is built from it. Fix the data the check names "
            "(or the gate in configs/), then materialize training_data again (`make run` "
            "ingests new landing files and rebuilds it).")


def batch_limits(settings: Settings) -> BatchLimits:
    bounds, batch = settings.data.bounds, settings.data.batch
    return BatchLimits(
        kinds=tuple(bounds.kinds),
        synopsis_chars=(bounds.synopsis_chars.min, bounds.synopsis_chars.max),
        years=(bounds.year.min, bounds.year.max),
        min_rows=batch.min_rows,
        max_no_genre_share=batch.max_no_genre_share,
    )


def training_limits(settings: Settings) -> TrainingLimits:
    data = settings.data
    return TrainingLimits(
        kinds=tuple(data.bounds.kinds),
        description_chars=(data.bounds.synopsis_chars.min, data.bounds.synopsis_chars.max),
        years=(data.bounds.year.min, data.bounds.year.max),
        labels_per_title=(data.labels_per_title.min, data.labels_per_title.max),
        label_cardinality=(data.label_cardinality.min, data.label_cardinality.max),
        max_duplicate_id_rate=data.max_duplicate_id_rate,
        max_duplicate_synopsis_rate=data.max_duplicate_synopsis_rate,
        max_null_rate=dict(data.max_null_rate),
    )


def drift_levels(settings: Settings) -> dict[str, tuple[float, float]]:
    config = settings.data.drift
    return {m: (getattr(config, m).warn, getattr(config, m).error) for m in DRIFT_METRICS}


# --------------------------------------------------------------------------------------
# Evaluating the training_data gates (no Dagster objects: the benchmark calls this too)


@dataclass
class TrainingGates:
    quality: SuiteOutcome
    profile: drift.DriftProfile  # of this table: the drift baseline once it is accepted
    baseline_label: str | None  # which version the table was compared with
    report: drift.DriftReport | None
    findings: list[drift.DriftFinding]

    @property
    def drift_level(self) -> drift.Level:
        return drift.overall_level(self.findings)

    @property
    def accepted(self) -> bool:
        """Passed both blocking gates: this table may become the next drift baseline."""
        return self.quality.success and self.drift_level != "error"


def evaluate_training_gates(
    table: pd.DataFrame, genres: Sequence[str], stats: TrainingTableStats, settings: Settings,
    taxonomy: Taxonomy, baseline: drift.DriftProfile | None, baseline_label: str | None = None,
) -> TrainingGates:
    quality = validate_training_table(
        table, genres, min_rows=settings.data.min_rows, min_support=taxonomy.min_support,
        max_no_genre_share=settings.data.max_no_genre_share,
        rows_without_genre=stats.rows_without_genre,
        duplicate_ids_replaced=stats.duplicate_ids_replaced, input_rows=stats.input_rows,
        limits=training_limits(settings),
    )
    config = settings.data.drift
    profile = drift.profile_table(table, sample_rows=config.vocabulary_sample_rows,
                                  taxonomy=taxonomy)
    report, found = None, []
    if baseline is not None:
        report = drift.compare(profile, baseline, length_bins=config.length_bins,
                               min_word_count=config.vocabulary_min_count)
        found = drift.findings(report, drift_levels(settings))
    return TrainingGates(quality, profile, baseline_label if baseline else None, report, found)


# --------------------------------------------------------------------------------------
# Which batches a failed training expectation comes from

DUPLICATE_SYNOPSIS = "expect_column_values_to_be_unique(description)"
DUPLICATE_IDS = "duplicate id rate across batches (computed)"
TOP_BATCHES = 3


def batch_contributions(quality: SuiteOutcome, batches: Sequence[tuple[str, pd.DataFrame]],
                        table: pd.DataFrame) -> dict[str, list[tuple[str, int]]]:
    """Failed expectation -> the batches contributing most rows to it, largest first.

    Each training row is traced to the batch that supplied it (the last batch with its id,
    as build_training_table keeps it). Shared synopses count the titles sharing one; repeated
    ids count the rows a batch replaced; other row checks count their sample rows. Table-wide
    checks (row count, genre support, ...) name no batch."""
    failed = [o.expectation for o in quality.failures]
    if not failed or not batches:
        return {}
    frame = pd.concat([b[["id"]].assign(batch=name) for name, b in batches], ignore_index=True)
    source = frame.drop_duplicates("id", keep="last").set_index("id")["batch"]
    found: dict[str, pd.Series] = {}
    for expectation in failed:
        if expectation == DUPLICATE_SYNOPSIS:
            values = table["description"].astype(str)
            shared = values.duplicated(keep=False) & (values.str.len() > 0)
            found[expectation] = source.reindex(table.loc[shared, "id"]).value_counts()
        elif expectation == DUPLICATE_IDS:
            replaced = frame["id"].duplicated(keep="last")
            found[expectation] = source.reindex(frame.loc[replaced, "id"]).value_counts()
        else:
            outcome = next(o for o in quality.failures if o.expectation == expectation)
            ids = [s.split(": ", 1)[0] for s in outcome.sample]
            found[expectation] = source.reindex([i for i in ids if i in source.index]
                                                ).value_counts()
    return {e: [(str(b), int(n)) for b, n in counts.sort_values(ascending=False, kind="stable")
                .head(TOP_BATCHES).items()]
            for e, counts in found.items() if len(counts)}


def _named(contributions: list[tuple[str, int]]) -> str:
    return ", ".join(f"{batch} ({plural(n, 'row')})" for batch, n in contributions)


# --------------------------------------------------------------------------------------
# Markdown helpers


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return "\n".join(md_table(header, rows))


def _offending_rows(suite: SuiteOutcome) -> str:
    """The sample rows of every failed (or warned) expectation, one line per row."""
    rows = [(o.summary or o.expectation, "FAIL" if o.severity == "error" else "WARN", s)
            for o in suite.failures + suite.warnings for s in o.sample]
    if not rows:
        return "no offending rows"
    return _md_table(("check", "result", "row: value"), rows)


def _failed(suite: SuiteOutcome) -> list[dict[str, Any]]:
    return [{"expectation": o.expectation, "severity": o.severity, "observed": o.observed,
             "expected": o.expected, "sample": o.sample}
            for o in suite.failures + suite.warnings]


# --------------------------------------------------------------------------------------
# Check results


def batch_quality_result(assessment: BatchAssessment,
                         record_uri: str | None) -> AssetCheckResult:
    suite = assessment.suite
    metadata: dict[str, Any] = {
        "file": assessment.name,
        "content_sha256": assessment.load.sha256,
        "format": str(assessment.load.format),
        "rows_read": assessment.rows,
        "quarantined": assessment.quarantined,
        "reasons": MetadataValue.md(md_bullets(assessment.reasons)),
        "warnings": MetadataValue.md(md_bullets(assessment.warnings)),
        "extra_columns": assessment.load.extra_columns,
    }
    if record_uri:
        metadata["quarantine_record"] = record_uri
    if suite is not None:
        metadata["results"] = MetadataValue.md(suite.to_markdown())
        metadata["failed_expectations"] = MetadataValue.json(_failed(suite))
        metadata["sample_offending_rows"] = MetadataValue.md(_offending_rows(suite))
    passed = not assessment.quarantined and not assessment.warnings
    return AssetCheckResult(
        check_name=BATCH_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.ERROR if assessment.quarantined else AssetCheckSeverity.WARN,
        description=md_text(assessment.summary()),
        metadata=metadata,
    )


def training_quality_result(
    gates: TrainingGates, contributions: dict[str, list[tuple[str, int]]] | None = None,
) -> AssetCheckResult:
    """The training suite's result; `contributions` (batch_contributions) names the batches
    behind each failed expectation, so a person knows which file to retire."""
    outcome, contributions = gates.quality, contributions or {}
    return AssetCheckResult(
        check_name=QUALITY_CHECK,
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR,
        description=md_text(
            "all expectations passed" if outcome.success else
            "failed: " + "; ".join(
                f"{f.expectation} (observed {f.observed}, expected {f.expected}"
                + (f"; most from {_named(contributions[f.expectation])}"
                   if f.expectation in contributions else "") + ")"
                for f in outcome.failures)
        ),
        metadata={
            "contributing_batches": MetadataValue.md(_md_table(
                ("expectation", "batch", "rows"),
                [(e, b, n) for e, found in contributions.items() for b, n in found])
                if contributions else "none"),
            "suite": outcome.suite,
            "expectations": len(outcome.outcomes),
            "failed": len(outcome.failures),
            "results": MetadataValue.md(outcome.to_markdown()),
            "failed_expectations": MetadataValue.json(_failed(outcome)),
            "sample_offending_rows": MetadataValue.md(_offending_rows(outcome)),
        },
    )


def drift_result(gates: TrainingGates,
                 left_out: dict[str, str] | None = None) -> AssetCheckResult:
    """The drift result; `left_out` (batch -> why) shows which accepted batches this table
    no longer holds (retired or removed), a cause of drift a person did on purpose."""
    extra = {"batches_left_out": MetadataValue.json(dict(left_out or {}))}
    if gates.report is None:
        return AssetCheckResult(
            check_name=DRIFT_CHECK, passed=True, severity=AssetCheckSeverity.WARN,
            description="no accepted training data to compare with yet: this version becomes "
                        "the baseline once it passes its gates",
            metadata={"baseline_version": "none", **extra},
        )
    level = gates.drift_level
    report = gates.report
    rows = [(f.metric, f.level.upper(), f"{f.observed:.4f}", f"{f.warn:g}", f"{f.error:g}",
             f.detail) for f in gates.findings]
    table = _md_table(("metric", "result", "observed", "warn above", "error above", "detail"),
                      rows)
    genre_rows = [(g, f"{report.genre_psi[g]:.4f}") for g in list(report.genre_psi)[:10]]
    off = [f for f in gates.findings if f.level != "ok"]
    description = "no drift above the warn levels" if not off else (
        f"{level.upper()}: " + "; ".join(
            f"{f.metric} {f.observed:.3f} > {f.error if f.level == 'error' else f.warn:g} "
            f"({f.detail})" for f in off))
    return AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=level == "ok",
        severity=AssetCheckSeverity.ERROR if level == "error" else AssetCheckSeverity.WARN,
        description=md_text(description),
        metadata={
            "baseline_version": str(gates.baseline_label),
            "level": level,
            "results": MetadataValue.md(table),
            "genre_psi_top": MetadataValue.md(_md_table(("genre", "PSI"), genre_rows)),
            "genre_js_divergence": round(report.genre_js, 5),
            "length_psi": round(report.length_psi, 5),
            "mean_length_before_after": [round(x, 1) for x in report.mean_length],
            "vocabulary_novelty": round(report.vocabulary_novelty, 5),
            "novel_words": MetadataValue.json(dict(report.novel_words)),
            "rows_before_after": [report.baseline_rows, report.current_rows],
            **extra,
        },
    )
