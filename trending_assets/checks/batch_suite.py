"""The Great Expectations suite on one landing batch: row-level expectations (columns, text
types, UTF-8, synopsis, kind, ids, tags, year), each marked `error` (the batch is
quarantined) or `warn` (reported, the batch is accepted). Samples name the offending rows.

Values GX cannot look at directly (tag counts, unknown tags, integer years) are derived
first, in a copy of the frame. The Dagster check (checks/batch_quality.py) shows the
returned `SuiteOutcome`; this module knows nothing about Dagster.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trending_assets.checks.gx_runtime import (
    META_KEY,
    exception_message,
    gx_runtime,
    run_validation,
    validation_definition,
)
from trending_assets.checks.outcomes import (
    ERROR,
    SAMPLE_SCAN,
    SAMPLE_SIZE,
    WARN,
    ExpectationOutcome,
    SuiteOutcome,
    percent,
    plural,
    short,
)
from trending_assets.ml.landing_file import (
    REQUIRED_COLUMNS as LANDING_COLUMNS,
)
from trending_assets.ml.landing_file import (
    TEXT_COLUMNS,
    integer_years,
)
from trending_assets.ml.taxonomy import Taxonomy

BATCH_SUITE_NAME = "landing_batch"
LABEL_SEPARATOR = "|"
# Content bounds a landing batch is held to; the training table built from the batches
# (training_suite) starts from the same ones.
KINDS: tuple[str, ...] = ("movie", "tv")
MIN_YEAR = 1900
MAX_YEAR = 2100
MAX_DESCRIPTION_CHARS = 5000

# Derived columns live in a copy of the frame; the prefix keeps them apart from real ones.
_ROW = "__gx_row"
_NOT_TEXT = "__gx_not_text"
_BAD_UTF8 = "__gx_bad_utf8"
_SYNOPSIS_CHARS = "__gx_synopsis_chars"
_TAG_COUNT = "__gx_tag_count"
_YEAR = "__gx_year"
_UNKNOWN_TAGS = "__gx_unknown_tags"
_HAS_GENRE = "__gx_has_genre"


@dataclass(frozen=True)
class BatchLimits:
    kinds: tuple[str, ...] = KINDS
    synopsis_chars: tuple[int, int] = (10, MAX_DESCRIPTION_CHARS)
    years: tuple[int, int] = (MIN_YEAR, MAX_YEAR)
    min_rows: int = 1
    max_no_genre_share: float = 0.5


@dataclass
class _BatchCheck:
    key: str
    name: str
    summary: str
    expected: str
    severity: str
    needs: tuple[str, ...]
    expectation: Any
    render: Callable[[Mapping[str, Any]], tuple[str, list[str]]]


def _row_label(row: Mapping[str, Any]) -> str:
    """How a sample names a row: its id, or its position when the id is empty."""
    tid = row.get("id")
    if isinstance(tid, str) and tid.strip():
        return tid
    return f"row {row.get(_ROW)}"


def _rows_sample(result: Mapping[str, Any], column: str,
                 fmt: Callable[[Any, Mapping[str, Any]], str]) -> list[str]:
    sample: list[str] = []
    for row in result.get("partial_unexpected_index_list") or []:
        if isinstance(row, Mapping):
            item = f"{_row_label(row)}: {fmt(row.get(column), row)}"
            if item not in sample:
                sample.append(item)
    if not sample:
        for value in result.get("partial_unexpected_list") or []:
            item = fmt(value, {})
            if item not in sample:
                sample.append(item)
    return sample[:SAMPLE_SIZE]


def _count_render(what: str, column: str,
                  fmt: Callable[[Any, Mapping[str, Any]], str] = lambda v, _: short(v),
                  checked_from_missing: bool = True):
    def render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        bad = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        checked = total - int(result.get("missing_count") or 0) if checked_from_missing else total
        if bad == 0:
            return f"0 of {checked} {what}", []
        return f"{bad} of {checked} {what}", _rows_sample(result, column, fmt)

    return render


def _batch_frame(frame: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """The batch with the derived columns the expectations look at (a copy)."""
    derived: dict[str, Any] = {_ROW: np.arange(1, len(frame) + 1)}
    present_text = [c for c in TEXT_COLUMNS if c in frame.columns]
    not_text = pd.Series(None, index=frame.index, dtype=object)
    bad_utf8 = pd.Series(None, index=frame.index, dtype=object)
    text: dict[str, pd.Series] = {}
    for column in present_text:
        values = frame[column]
        if not (pd.api.types.is_string_dtype(values.dtype) and values.dtype != object):
            is_text = values.map(lambda v: isinstance(v, str))
            for position in np.flatnonzero(~is_text.to_numpy(dtype=bool)):
                kind = type(values.iloc[position]).__name__
                note = f"{column} is {kind} {short(values.iloc[position])}"
                old = not_text.iloc[position]
                not_text.iloc[position] = f"{old}; {note}" if isinstance(old, str) else note
            values = values.map(str)
        values = values.astype(str)
        text[column] = values
        replaced = values.str.contains("\ufffd", regex=False).to_numpy(dtype=bool)
        for position in np.flatnonzero(replaced):
            note = f"{column} {short(values.iloc[position])}"
            old = bad_utf8.iloc[position]
            bad_utf8.iloc[position] = f"{old}; {note}" if isinstance(old, str) else note
    derived[_NOT_TEXT] = not_text
    derived[_BAD_UTF8] = bad_utf8
    if "description" in text:
        chars = text["description"].str.len().astype("float64")
        blank = text["description"].str.strip() == ""
        derived[_SYNOPSIS_CHARS] = chars.where(~blank)
    if "genres" in text:
        codes, distinct = pd.factorize(text["genres"])
        tags = [[t.strip() for t in d.split(LABEL_SEPARATOR) if t.strip()] for d in distinct]
        mapped = [taxonomy.map_tags(t) for t in tags]
        tag_count = np.array([len(t) for t in tags], dtype=float)
        unknown = np.array([LABEL_SEPARATOR.join(u) or None for _, u in mapped], dtype=object)
        has_genre = np.array([bool(g) for g, _ in mapped], dtype=bool)
        derived[_TAG_COUNT] = tag_count[codes] if len(codes) else []
        derived[_UNKNOWN_TAGS] = unknown[codes] if len(codes) else []
        derived[_HAS_GENRE] = has_genre[codes] if len(codes) else []
    if "year" in frame.columns:
        derived[_YEAR] = integer_years(frame["year"])
    base = frame.assign(**{c: v for c, v in text.items()})
    extra = pd.DataFrame(derived, index=frame.index)
    for column in (_NOT_TEXT, _BAD_UTF8, _UNKNOWN_TAGS):
        if column in extra.columns:
            extra[column] = extra[column].astype(object)
    return pd.concat([base.drop(columns=[c for c in extra.columns if c in base.columns]),
                      extra], axis=1)


def _batch_checks(gxe: Any, frame: pd.DataFrame, limits: BatchLimits) -> list[_BatchCheck]:
    def meta(key: str) -> dict[str, str]:
        return {META_KEY: key}

    lo_chars, hi_chars = limits.synopsis_chars
    lo_year, hi_year = limits.years

    def rows_render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        n = int(result.get("observed_value") or 0)
        if n == 0:
            return "0 rows: the file has a header but no data rows", []
        return plural(n, "row"), []

    def columns_render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        missing = [c for c in LANDING_COLUMNS if c not in frame.columns]
        if not missing:
            return f"all {len(LANDING_COLUMNS)} present", []
        found = ", ".join(map(str, frame.columns)) or "none"
        return f"missing: {', '.join(missing)} (found: {found})", []

    def raw_year(value: Any, row: Mapping[str, Any]) -> str:
        position = row.get(_ROW)
        if position is None or "year" not in frame.columns:
            return short(value)
        return short(frame["year"].iloc[int(position) - 1])

    def unique_render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        bad = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        if bad == 0:
            return f"{total} distinct ids", []
        ids = [str(c["value"]) for c in result.get("partial_unexpected_counts") or []
               if "value" in c]
        return f"{bad} rows share an id (the last row with an id wins)", ids[:SAMPLE_SIZE]

    def genre_render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        bad = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        share = bad / total if total else 0.0
        observed = f"{bad} of {total} rows ({percent(share)}) have no canonical genre"
        if bad:
            observed += " and are not trained on"
        tags = frame["genres"] if "genres" in frame.columns else None

        def fmt(_: Any, row: Mapping[str, Any]) -> str:
            if tags is None or row.get(_ROW) is None:
                return "no canonical genre"
            return short(tags.iloc[int(row[_ROW]) - 1])

        return observed, _rows_sample(result, _HAS_GENRE, fmt) if bad else []

    def chars_fmt(value: Any, _: Mapping[str, Any]) -> str:
        if isinstance(value, float) and not math.isnan(value):
            return f"{int(value):,} chars"
        return short(value)

    return [
        _BatchCheck("rows", "expect_table_row_count_to_be_between", "data rows in the file",
                    f">= {limits.min_rows}", ERROR, (),
                    gxe.ExpectTableRowCountToBeBetween(min_value=limits.min_rows,
                                                       meta=meta("rows")), rows_render),
        _BatchCheck("columns", "expect_table_columns_to_match_set(required columns)",
                    "required columns", "all of " + ", ".join(LANDING_COLUMNS), ERROR, (),
                    gxe.ExpectTableColumnsToMatchSet(column_set=list(LANDING_COLUMNS),
                                                     exact_match=False, meta=meta("columns")),
                    columns_render),
        _BatchCheck("text_types", "expect_column_values_to_be_null(non-text values)",
                    "text columns hold text", "text in " + ", ".join(TEXT_COLUMNS), ERROR, (),
                    gxe.ExpectColumnValuesToBeNull(column=_NOT_TEXT, meta=meta("text_types")),
                    _count_render("rows with non-text values", _NOT_TEXT, lambda v, _: str(v))),
        _BatchCheck("utf8", "expect_column_values_to_be_null(undecodable text)",
                    "text is valid UTF-8", "no undecodable bytes (U+FFFD)", ERROR, (),
                    gxe.ExpectColumnValuesToBeNull(column=_BAD_UTF8, meta=meta("utf8")),
                    _count_render("rows with bytes that are not UTF-8", _BAD_UTF8,
                                  lambda v, _: str(v))),
        _BatchCheck("id_present", "expect_column_value_lengths_to_be_between(id)",
                    "every row has an id", "not empty", ERROR, ("id",),
                    gxe.ExpectColumnValueLengthsToBeBetween(column="id", min_value=1,
                                                            meta=meta("id_present")),
                    _count_render("ids empty", "id", lambda v, _: "empty id")),
        _BatchCheck("id_unique", "expect_column_values_to_be_unique(id)",
                    "ids unique within the batch", "unique", WARN, ("id",),
                    gxe.ExpectColumnValuesToBeUnique(column="id", meta=meta("id_unique")),
                    unique_render),
        _BatchCheck("synopsis_present", "expect_column_values_to_not_be_null(synopsis)",
                    "synopsis not empty", "not empty", ERROR, ("description",),
                    gxe.ExpectColumnValuesToNotBeNull(column=_SYNOPSIS_CHARS,
                                                      meta=meta("synopsis_present")),
                    _count_render("synopses empty", _SYNOPSIS_CHARS, lambda v, _: "empty",
                                  checked_from_missing=False)),
        _BatchCheck("synopsis_length", "expect_column_value_lengths_to_be_between(description)",
                    "synopsis length", f"{lo_chars:,}–{hi_chars:,} characters", ERROR,
                    ("description",),
                    gxe.ExpectColumnValuesToBeBetween(column=_SYNOPSIS_CHARS, min_value=lo_chars,
                                                      max_value=hi_chars,
                                                      meta=meta("synopsis_length")),
                    _count_render("synopses out of range", _SYNOPSIS_CHARS, chars_fmt)),
        _BatchCheck("kind", "expect_column_values_to_be_in_set(kind)", "known kind",
                    "in {" + ", ".join(limits.kinds) + "}", ERROR, ("kind",),
                    gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=list(limits.kinds),
                                                    meta=meta("kind")),
                    _count_render("kinds not in set", "kind")),
        _BatchCheck("tags_present", "expect_column_values_to_be_between(number of tags)",
                    "genre tags present", "at least 1 tag", ERROR, ("genres",),
                    gxe.ExpectColumnValuesToBeBetween(column=_TAG_COUNT, min_value=1,
                                                      meta=meta("tags_present")),
                    _count_render("rows without genre tags", _TAG_COUNT,
                                  lambda v, _: "no tags")),
        _BatchCheck("tags_known", "expect_column_values_to_be_null(tags not in taxonomy)",
                    "genre tags known to the taxonomy", "every tag in configs/genres.yaml",
                    WARN, ("genres",),
                    gxe.ExpectColumnValuesToBeNull(column=_UNKNOWN_TAGS, meta=meta("tags_known")),
                    _count_render("rows with tags not in the taxonomy (the row keeps its "
                                  "known genres)", _UNKNOWN_TAGS, lambda v, _: repr(str(v)))),
        _BatchCheck("canonical_genre", "expect_column_values_to_be_in_set(has canonical genre)",
                    "rows with a canonical genre",
                    f"at most {percent(limits.max_no_genre_share)} without", ERROR, ("genres",),
                    gxe.ExpectColumnValuesToBeInSet(
                        column=_HAS_GENRE, value_set=[True],
                        mostly=max(0.0, min(1.0, 1.0 - limits.max_no_genre_share)),
                        meta=meta("canonical_genre")),
                    genre_render),
        _BatchCheck("year_integer", "expect_column_values_to_not_be_null(integer year)",
                    "year is an integer", "an integer", ERROR, ("year",),
                    gxe.ExpectColumnValuesToNotBeNull(column=_YEAR, meta=meta("year_integer")),
                    _count_render("years not integers", _YEAR, raw_year,
                                  checked_from_missing=False)),
        _BatchCheck("year_range", "expect_column_values_to_be_between(year)", "year in range",
                    f"{lo_year}–{hi_year}", ERROR, ("year",),
                    gxe.ExpectColumnValuesToBeBetween(column=_YEAR, min_value=lo_year,
                                                      max_value=hi_year, meta=meta("year_range")),
                    _count_render("years out of range", _YEAR)),
    ]


def validate_landing_batch(
    frame: pd.DataFrame, taxonomy: Taxonomy, limits: BatchLimits = BatchLimits()
) -> SuiteOutcome:
    """Validate one landing batch, row by row, with a Great Expectations suite."""
    g = gx_runtime()
    checks = _batch_checks(g.gxe, frame, limits)
    derived = _batch_frame(frame, taxonomy)
    outcomes: dict[str, ExpectationOutcome] = {}
    runnable = []
    for check in checks:
        missing = [c for c in check.needs if c not in frame.columns]
        if missing:
            outcomes[check.key] = ExpectationOutcome(
                check.name, False, f"not evaluated: column {', '.join(missing)} missing",
                check.expected, [], check.severity, check.summary)
        else:
            runnable.append(check)
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": SAMPLE_SCAN,
        "unexpected_index_column_names": [_ROW, "id"] if "id" in derived.columns else [_ROW],
    }
    name = f"{BATCH_SUITE_NAME}-{uuid.uuid4().hex}"
    validation = validation_definition(name, [c.expectation for c in runnable])
    try:
        results = run_validation(validation, derived, result_format)
    finally:
        g.context.suites.delete(name)
    by_key = {(r.expectation_config.meta or {}).get(META_KEY): r for r in results}
    for check in runnable:
        result = by_key.get(check.key)
        error = exception_message(result) if result is not None else "GX returned no result"
        if error:
            outcomes[check.key] = ExpectationOutcome(
                check.name, False, f"not evaluated: {error}", check.expected, [],
                check.severity, check.summary)
            continue
        observed, sample = check.render(result.result or {})
        outcomes[check.key] = ExpectationOutcome(
            check.name, bool(result.success), observed, check.expected, sample,
            check.severity, check.summary)
    ordered = [outcomes[c.key] for c in checks]
    return SuiteOutcome(
        suite=BATCH_SUITE_NAME,
        success=all(o.success for o in ordered if o.severity == ERROR),
        outcomes=ordered,
    )
