"""The Great Expectations suite on the merged training table: the blocking gate.

Its row-level work (lengths, duplicates, label parsing, per-genre support, null rates) is
computed once with vectorized pandas into a profile, one row per metric and bound, and GX
evaluates that profile (`expect_column_pair_values_a_to_be_greater_than_b`: observed value
against its bounds). Why not one GX expectation per column: GX costs about 20-30 ms per
expectation whatever the table size (measured here with GX 1.24), so the 15-expectation
row-level suite took 0.42 s on 10k rows and 1.8 s on 100k, 39% and 22% of the TF-IDF
featurization of the same rows; the budget is 10% (see trending_assets.bench.validation).
Each outcome still carries the name of the GX expectation it stands for.

The Dagster checks (checks/data_quality.py) show the returned `SuiteOutcome`; this module
knows nothing about Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from trending_assets.checks.batch_suite import (
    KINDS,
    LABEL_SEPARATOR,
    MAX_DESCRIPTION_CHARS,
    MAX_YEAR,
    MIN_YEAR,
)
from trending_assets.checks.gx_runtime import (
    META_KEY,
    exception_message,
    gx_runtime,
    run_validation,
    validation_definition,
)
from trending_assets.checks.outcomes import (
    SAMPLE_SCAN,
    SAMPLE_SIZE,
    ExpectationOutcome,
    SuiteOutcome,
    percent,
    plural,
    short,
)

SUITE_NAME = "training_table"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "title",
    "kind",
    "description",
    "genres",
    "year",
    "labels",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Netflix lists at most three tags per title, and movie/TV twins map to one genre.
MIN_LABELS = 1
MAX_LABELS = 3


@dataclass(frozen=True)
class TrainingLimits:
    kinds: tuple[str, ...] = KINDS
    description_chars: tuple[int, int] = (1, MAX_DESCRIPTION_CHARS)
    years: tuple[int, int] = (MIN_YEAR, MAX_YEAR)
    labels_per_title: tuple[int, int] = (MIN_LABELS, MAX_LABELS)
    label_cardinality: tuple[float, float] = (1.0, float(MAX_LABELS))
    max_duplicate_id_rate: float = 0.5
    max_duplicate_synopsis_rate: float = 0.02
    max_null_rate: Mapping[str, float] = field(default_factory=dict)  # absent column: 0


@dataclass
class _Metric:
    """A profile row: one observed number of one check and the range it must lie in."""

    part: str
    value: float
    low: float = -math.inf
    high: float = math.inf


@dataclass
class _Profiled:
    key: str
    name: str
    expected: str
    needs: tuple[str, ...]
    measure: Callable[[], tuple[list[_Metric], str, list[str]]]


def _ids_sample(ids: pd.Series | None, mask: np.ndarray, values: pd.Series | None = None,
                fmt: Callable[[Any], str] = short) -> list[str]:
    """'<id>: <value>' for the first offending rows (or just ids / values)."""
    positions = np.flatnonzero(mask)[: SAMPLE_SCAN]
    sample: list[str] = []
    for position in positions:
        if ids is not None and values is not None:
            item = f"{ids.iloc[position]}: {fmt(values.iloc[position])}"
        elif ids is not None:
            item = str(ids.iloc[position])
        else:
            item = fmt(values.iloc[position]) if values is not None else str(position)
        if item not in sample:
            sample.append(item)
    return sample[:SAMPLE_SIZE]


def _null_mask(values: pd.Series) -> np.ndarray:
    return values.isna().to_numpy(dtype=bool)


def _label_parts(labels: pd.Series, genres: Sequence[str]) -> SimpleNamespace:
    """Per-row label count, unknown labels and a genre membership matrix, via distinct values."""
    null = _null_mask(labels)
    codes, distinct = pd.factorize(labels)
    known = set(genres)
    index = {g: j for j, g in enumerate(genres)}
    n_labels = np.zeros(len(distinct) + 1, dtype=int)  # last slot: null labels
    unknown = np.empty(len(distinct) + 1, dtype=object)
    member = np.zeros((len(distinct) + 1, len(genres)), dtype=np.int64)
    for i, value in enumerate(distinct):
        parts = [p.strip() for p in str(value).split(LABEL_SEPARATOR)] if value != "" else []
        # Empty parts ("Drama||Comedy") do not count as labels; they show up as unknown.
        n_labels[i] = sum(1 for p in parts if p)
        unknown[i] = LABEL_SEPARATOR.join(p or repr(p) for p in parts if p not in known) or None
        for p in parts:
            if p in index:
                member[i, index[p]] = 1
    codes = np.where(codes < 0, len(distinct), codes)
    return SimpleNamespace(null=null, codes=codes, n_labels=n_labels[codes],
                           unknown=unknown[codes], support=np.bincount(
                               codes, minlength=len(distinct) + 1) @ member)


def _training_checks(
    table: pd.DataFrame, genres: Sequence[str], min_rows: int, min_support: int,
    limits: TrainingLimits, duplicate_ids_replaced: int, input_rows: int | None,
) -> list[_Profiled]:
    n = len(table)
    ids = table["id"].astype(str) if "id" in table.columns else None
    cache_: dict[str, Any] = {}

    def labels() -> SimpleNamespace:
        if "labels" not in cache_:
            cache_["labels"] = _label_parts(table["labels"], genres)
        return cache_["labels"]

    def max_null(column: str) -> float:
        return float(limits.max_null_rate.get(column, 0.0))

    def null_expected(column: str) -> str:
        limit = max_null(column)
        return "no nulls" if limit == 0 else f"<= {percent(limit)} null"

    def row_count() -> tuple[list[_Metric], str, list[str]]:
        return [_Metric("", n, low=min_rows)], plural(n, "row"), []

    def columns() -> tuple[list[_Metric], str, list[str]]:
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        metrics = [_Metric(c, float(c in missing), high=0) for c in REQUIRED_COLUMNS]
        if not missing:
            return metrics, f"all {len(REQUIRED_COLUMNS)} present", []
        return metrics, "missing: " + ", ".join(missing), missing[:SAMPLE_SIZE]

    def id_unique() -> tuple[list[_Metric], str, list[str]]:
        present = table["id"][~_null_mask(table["id"])]
        duplicated = present.duplicated(keep=False).to_numpy(dtype=bool)
        bad = int(duplicated.sum())
        if bad == 0:
            return [_Metric("", 0, high=0)], f"{len(present)} distinct ids", []
        sample = list(dict.fromkeys(present[duplicated].astype(str)))[:SAMPLE_SIZE]
        return [_Metric("", bad, high=0)], f"{bad} rows share a duplicated id", sample

    def not_null(column: str, with_ids: bool):
        def measure() -> tuple[list[_Metric], str, list[str]]:
            null = _null_mask(table[column])
            bad = int(null.sum())
            metric = [_Metric("", bad / n if n else 0.0, high=max_null(column))]
            if bad == 0:
                return metric, f"no nulls in {n} rows", []
            sample = _ids_sample(ids, null) if with_ids and ids is not None else []
            return metric, f"{bad} of {n} null", sample

        return measure

    def description_length() -> tuple[list[_Metric], str, list[str]]:
        values = table["description"]
        null = _null_mask(values)
        lo, hi = limits.description_chars
        lengths = values.astype(str).str.len().to_numpy()
        bad = ~null & ((lengths < lo) | (lengths > hi))
        count, checked = int(bad.sum()), int((~null).sum())
        def fmt(value: Any) -> str:
            return f"{len(value):,} chars" if isinstance(value, str) and value else short(value)

        sample = _ids_sample(ids, bad, values, fmt) if count else []
        return [_Metric("", count, high=0)], f"{count} of {checked} descriptions out of range", \
            sample

    def in_set(column: str, allowed: Sequence[str], what: str):
        def measure() -> tuple[list[_Metric], str, list[str]]:
            values = table[column]
            null = _null_mask(values)
            bad = ~null & ~values.isin(list(allowed)).to_numpy(dtype=bool)
            count, checked = int(bad.sum()), int((~null).sum())
            sample = _ids_sample(ids, bad, values) if count else []
            return [_Metric("", count, high=0)], f"{count} of {checked} {what} not in set", \
                sample

        return measure

    def year() -> tuple[list[_Metric], str, list[str]]:
        values = table["year"]
        null = _null_mask(values)
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        lo, hi = limits.years
        bad = ~null & ~((numeric >= lo) & (numeric <= hi))
        count, checked = int(bad.sum()), int((~null).sum())
        sample = _ids_sample(ids, bad, values) if count else []
        return [_Metric("", count, high=0)], f"{count} of {checked} years out of range", sample

    def labels_not_empty() -> tuple[list[_Metric], str, list[str]]:
        values = table["labels"]
        null = _null_mask(values)
        bad = ~null & (values.astype(str).str.len().to_numpy() < 1)
        count, checked = int(bad.sum()), int((~null).sum())
        sample = _ids_sample(ids, bad, values) if count else []
        return [_Metric("", count, high=0)], f"{count} of {checked} labels empty", sample

    def label_count() -> tuple[list[_Metric], str, list[str]]:
        parts = labels()
        lo, hi = limits.labels_per_title
        bad = (parts.n_labels < lo) | (parts.n_labels > hi)
        count = int(bad.sum())
        counts = pd.Series(parts.n_labels)
        sample = _ids_sample(ids, bad, counts, lambda v: f"{v} labels") if count else []
        return [_Metric("", count, high=0)], \
            f"{count} of {n} titles with a bad label count", sample

    def label_cardinality() -> tuple[list[_Metric], str, list[str]]:
        mean = float(labels().n_labels.mean()) if n else 0.0
        lo, hi = limits.label_cardinality
        return [_Metric("", mean, low=lo, high=hi)], \
            f"{mean:.2f} genres per title on average", []

    def labels_known() -> tuple[list[_Metric], str, list[str]]:
        parts = labels()
        bad = np.array([u is not None for u in parts.unknown], dtype=bool) & ~parts.null
        count, checked = int(bad.sum()), int((~parts.null).sum())
        sample = _ids_sample(ids, bad, pd.Series(parts.unknown), str) if count else []
        return [_Metric("", count, high=0)], \
            f"{count} of {checked} titles with unknown labels", sample

    def support() -> tuple[list[_Metric], str, list[str]]:
        counts = {g: int(c) for g, c in zip(genres, labels().support, strict=True)}
        metrics = [_Metric(g, counts[g], low=min_support) for g in genres]
        if not genres:
            return metrics, "no genres to check", []
        # Lowest support first: the genres that fail, or the weakest one if none does.
        order = {g: i for i, g in enumerate(genres)}
        ranked = sorted(genres, key=lambda g: (counts[g], order[g]))
        below = [g for g in ranked if counts[g] < min_support]
        if not below:
            weakest = ranked[0]
            return metrics, f"lowest: {weakest} with {plural(counts[weakest], 'title')}", []
        observed = f"{len(below)} of {len(genres)} genres below {min_support}"
        return metrics, observed, [f"{g}: {counts[g]}" for g in below[:SAMPLE_SIZE]]

    def duplicate_ids() -> tuple[list[_Metric], str, list[str]]:
        total = input_rows if input_rows is not None else n + duplicate_ids_replaced
        rate = duplicate_ids_replaced / total if total else 0.0
        return [_Metric("", rate, high=limits.max_duplicate_id_rate)], \
            f"{percent(rate)} ({duplicate_ids_replaced} of {total} input rows replaced by a " \
            "later row with their id)", []

    def duplicate_synopses() -> tuple[list[_Metric], str, list[str]]:
        values = table["description"]
        usable = ~_null_mask(values) & (values.astype(str).str.len().to_numpy() > 0)
        shared = np.zeros(n, dtype=bool)
        shared[usable] = values[usable].duplicated(keep=False).to_numpy(dtype=bool)
        count = int(shared.sum())
        rate = count / n if n else 0.0
        sample = _ids_sample(ids, shared) if count else []
        return [_Metric("", rate, high=limits.max_duplicate_synopsis_rate)], \
            f"{percent(rate)} ({count} titles share their synopsis with another)", sample

    other = [c for c in ("title", "kind", "genres", "year") if c in table.columns]

    def null_rates() -> tuple[list[_Metric], str, list[str]]:
        metrics, over = [], []
        for column in other:
            values = table[column]
            missing = _null_mask(values)
            if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
                missing = missing | (values.astype(str).str.strip() == "").to_numpy(dtype=bool)
            share = float(missing.mean()) if n else 0.0
            metrics.append(_Metric(column, share, high=max_null(column)))
            if share > max_null(column):
                over.append(f"{column}: {percent(share)}")
        if not metrics:
            return metrics, "no columns to check", []
        worst = max(metrics, key=lambda m: m.value)
        observed = (f"{len(over)} of {len(metrics)} columns over their limit" if over
                    else f"largest: {worst.part} {percent(worst.value)}")
        return metrics, observed, over[:SAMPLE_SIZE]

    checks = [
        _Profiled("row_count", "expect_table_row_count_to_be_between", f">= {min_rows} rows",
                  (), row_count),
        _Profiled("columns", f"expect_column_to_exist({', '.join(REQUIRED_COLUMNS)})",
                  "all present", (), columns),
        _Profiled("id_unique", "expect_column_values_to_be_unique(id)", "unique", ("id",),
                  id_unique),
        _Profiled("id_not_null", "expect_column_values_to_not_be_null(id)",
                  null_expected("id"), ("id",), not_null("id", with_ids=False)),
        _Profiled("description_not_null", "expect_column_values_to_not_be_null(description)",
                  null_expected("description"), ("description",),
                  not_null("description", with_ids=True)),
        _Profiled("description_length",
                  "expect_column_value_lengths_to_be_between(description)",
                  f"{limits.description_chars[0]}–{limits.description_chars[1]} characters",
                  ("description",), description_length),
        _Profiled("description_unique", "expect_column_values_to_be_unique(description)",
                  f"<= {percent(limits.max_duplicate_synopsis_rate)} of titles",
                  ("description",), duplicate_synopses),
        _Profiled("kind", "expect_column_values_to_be_in_set(kind)",
                  "in {" + ", ".join(limits.kinds) + "}", ("kind",),
                  in_set("kind", limits.kinds, "kinds")),
        _Profiled("year", "expect_column_values_to_be_between(year)",
                  f"{limits.years[0]}–{limits.years[1]}", ("year",), year),
        _Profiled("null_rates", f"expect_column_values_to_not_be_null({', '.join(other)})",
                  ", ".join(f"{c} <= {percent(max_null(c))}" for c in other) or "-", (),
                  null_rates),
        _Profiled("labels_not_null", "expect_column_values_to_not_be_null(labels)",
                  null_expected("labels"), ("labels",), not_null("labels", with_ids=True)),
        _Profiled("labels_not_empty", "expect_column_value_lengths_to_be_between(labels)",
                  "not empty", ("labels",), labels_not_empty),
        _Profiled("label_count", "expect_column_values_to_be_between(number of labels)",
                  f"{limits.labels_per_title[0]}–{limits.labels_per_title[1]} labels per title",
                  ("labels",), label_count),
        _Profiled("label_cardinality", "expect_column_mean_to_be_between(number of labels)",
                  f"{limits.label_cardinality[0]:.1f}–{limits.label_cardinality[1]:.1f}",
                  ("labels",), label_cardinality),
        _Profiled("labels_known", "expect_column_values_to_be_null(labels not in genres)",
                  f"every label one of the {len(genres)} genres", ("labels",), labels_known),
        _Profiled("support", "expect_column_sum_to_be_between(titles per genre)",
                  f">= {min_support} titles per genre", ("labels",), support),
        _Profiled("duplicate_ids", "duplicate id rate across batches (computed)",
                  f"<= {percent(limits.max_duplicate_id_rate)}", (), duplicate_ids),
    ]
    if "split" in table.columns:
        checks.append(_Profiled("split", "expect_column_values_to_be_in_set(split)",
                                "in {" + ", ".join(SPLITS) + "}", ("split",),
                                in_set("split", SPLITS, "splits")))
    return checks


def _no_genre_share_outcome(
    kept_rows: int, rows_without_genre: int, max_no_genre_share: float
) -> tuple[ExpectationOutcome, _Metric]:
    total = kept_rows + rows_without_genre
    share = rows_without_genre / total if total else 0.0
    outcome = ExpectationOutcome(
        expectation="share of titles without a canonical genre (computed)",
        success=share <= max_no_genre_share,
        observed=f"{share:.1%} ({rows_without_genre} of {total} titles)",
        expected=f"<= {max_no_genre_share:.1%}",
        sample=[],
    )
    return outcome, _Metric("", share, high=max_no_genre_share)


def _profile_validation() -> Any:
    g = gx_runtime()
    if "profile" not in g.validations:
        g.validations["profile"] = validation_definition(f"{SUITE_NAME}_profile", [
            g.gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="greater", column_B="lesser", or_equal=True,
                meta={META_KEY: "bounds"}),
        ])
    return g.validations["profile"]


def validate_training_table(
    table: pd.DataFrame,
    genres: Sequence[str],
    *,
    min_rows: int,
    min_support: int,
    max_no_genre_share: float,
    rows_without_genre: int,
    duplicate_ids_replaced: int = 0,
    input_rows: int | None = None,
    limits: TrainingLimits = TrainingLimits(),
) -> SuiteOutcome:
    """Validate the training table: a profile of it, evaluated by a Great Expectations suite.

    `genres` are the canonical genres the labels must come from; `rows_without_genre` is
    the number of titles dropped from the table for having no canonical genre,
    `duplicate_ids_replaced` the input rows replaced by a later row with the same id.
    """
    genres = list(dict.fromkeys(genres))
    checks = _training_checks(table, genres, min_rows, min_support, limits,
                              duplicate_ids_replaced, input_rows)
    measured: dict[str, tuple[list[_Metric], str, list[str]]] = {}
    outcomes: dict[str, ExpectationOutcome] = {}
    for check in checks:
        missing = [c for c in check.needs if c not in table.columns]
        if missing:
            outcomes[check.key] = ExpectationOutcome(
                check.name, False, f"not evaluated: column {', '.join(missing)} missing",
                check.expected, [])
        else:
            measured[check.key] = check.measure()
    no_genre, no_genre_metric = _no_genre_share_outcome(len(table), rows_without_genre,
                                                        max_no_genre_share)
    measured["no_genre_share"] = ([no_genre_metric], no_genre.observed, [])

    # The profile: one row per metric and finite bound, "greater >= lesser" must hold.
    rows: list[tuple[str, str, str, float, float]] = []
    for key, (metrics, _, _) in measured.items():
        for m in metrics:
            if m.low > -math.inf:
                rows.append((key, m.part, "minimum", m.value, m.low))
            if m.high < math.inf:
                rows.append((key, m.part, "maximum", m.high, m.value))
    profile = pd.DataFrame(rows, columns=["check", "part", "bound", "greater", "lesser"])
    result = run_validation(_profile_validation(), profile, {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": ["check", "part", "bound"],
    })[0]
    error = exception_message(result)
    failed_keys = {row["check"] for row in (result.result or {}).get("unexpected_index_list")
                   or [] if isinstance(row, Mapping)}
    for check in checks:
        if check.key in measured:
            _, observed, sample = measured[check.key]
            if error:
                outcomes[check.key] = ExpectationOutcome(
                    check.name, False, f"not evaluated: {error}", check.expected, [])
            else:
                outcomes[check.key] = ExpectationOutcome(
                    check.name, check.key not in failed_keys, observed, check.expected, sample)
    ordered = [outcomes[c.key] for c in checks]
    ordered.append(ExpectationOutcome(
        no_genre.expectation, not error and "no_genre_share" not in failed_keys,
        no_genre.observed, no_genre.expected, []))
    return SuiteOutcome(
        suite=SUITE_NAME,
        success=all(o.success for o in ordered),
        outcomes=ordered,
    )
