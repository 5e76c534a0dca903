"""Great Expectations suites: one per landing batch, one on the training table.

The Dagster checks (checks/data_quality.py) call these and show the returned
`SuiteOutcome` in the UI; this module knows nothing about Dagster.

Great Expectations 1.x runs in one ephemeral (in-memory) context per process: a pandas
data source with a whole-dataframe batch definition, an `ExpectationSuite` and a
`ValidationDefinition` run with the frame as batch parameter.

- `validate_landing_batch`: row-level expectations on one landing file (columns, text
  types, UTF-8, synopsis, kind, ids, tags, year), each marked `error` (the batch is
  quarantined) or `warn` (reported, the batch is accepted). Samples name the offending rows.
- `validate_training_table`: the blocking gate on the merged training table. Its row-level
  work (lengths, duplicates, label parsing, per-genre support, null rates) is computed once
  with vectorized pandas into a profile, one row per metric and bound, and GX evaluates
  that profile (`expect_column_pair_values_a_to_be_greater_than_b`: observed value against
  its bounds). Why not one GX expectation per column: GX costs about 20-30 ms per
  expectation whatever the table size (measured here with GX 1.24), so the 15-expectation
  row-level suite took 0.42 s on 10k rows and 1.8 s on 100k, 39% and 22% of the TF-IDF
  featurization of the same rows; the budget is 10% (see trending_assets.bench.validation).
  Each outcome still carries the name of the GX expectation it stands for.
Values GX cannot look at directly (label counts, unknown labels, one 0/1 column per genre)
are derived first, in a copy of the frame.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from trending_assets.ml.dataset import (
    REQUIRED_COLUMNS as LANDING_COLUMNS,
)
from trending_assets.ml.dataset import (
    TEXT_COLUMNS,
    integer_years,
)
from trending_assets.ml.markdown import md_table
from trending_assets.ml.taxonomy import Taxonomy

# Great Expectations 1.x sends usage analytics (to a remote endpoint) unless this is set
# before `great_expectations` is first imported; pipeline pods and CI have no business
# phoning home. setdefault keeps an explicit opt-in by the operator working.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

SUITE_NAME = "training_table"
BATCH_SUITE_NAME = "landing_batch"
LABEL_SEPARATOR = "|"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "title",
    "kind",
    "description",
    "genres",
    "year",
    "labels",
)
KINDS: tuple[str, ...] = ("movie", "tv")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_YEAR = 1900
MAX_YEAR = 2100
MAX_DESCRIPTION_CHARS = 5000
# Netflix lists at most three tags per title, and movie/TV twins map to one genre.
MIN_LABELS = 1
MAX_LABELS = 3
SAMPLE_SIZE = 5
# GX keeps this many unexpected values per expectation (SUMMARY result format); more than
# SAMPLE_SIZE so that de-duplicating (a duplicated id shows up twice) still leaves five.
_PARTIAL_UNEXPECTED = 20
_VALUE_CHARS = 60

ERROR = "error"
WARN = "warn"

# Derived columns live in a copy of the frame; the prefix keeps them apart from real ones.
_ROW = "__gx_row"
_NOT_TEXT = "__gx_not_text"
_BAD_UTF8 = "__gx_bad_utf8"
_SYNOPSIS_CHARS = "__gx_synopsis_chars"
_TAG_COUNT = "__gx_tag_count"
_YEAR = "__gx_year"
_UNKNOWN_TAGS = "__gx_unknown_tags"
_HAS_GENRE = "__gx_has_genre"
_META_KEY = "trending_check"


@dataclass(frozen=True)
class ExpectationOutcome:
    """One line of a suite's report."""

    expectation: str  # e.g. "expect_column_values_to_be_unique(id)"
    success: bool
    observed: str  # human-readable observed value, e.g. "3 rows share a duplicated id"
    expected: str  # human-readable expectation, e.g. "unique" or ">= 500 rows"
    sample: list[str]  # up to 5 offending values or row ids
    severity: str = ERROR  # error: fails the suite; warn: reported, the suite still passes
    summary: str = ""  # the check in plain words, e.g. "synopsis length"

    def reason(self) -> str:
        """A sentence a person can act on: what was checked, seen, wanted, and examples."""
        text = f"{self.summary or self.expectation}: {self.observed} (expected {self.expected})"
        if self.sample:
            text += "; e.g. " + ", ".join(self.sample)
        return text


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """Failed expectations that fail the suite (severity error)."""
        return [o for o in self.outcomes if not o.success and o.severity == ERROR]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed expectations that are only reported (severity warn)."""
        return [o for o in self.outcomes if not o.success and o.severity != ERROR]

    def to_markdown(self) -> str:
        """A summary line, then expectation | result | observed | expected | sample."""
        failed = len(self.failures)
        total = len(self.outcomes)
        warned = len(self.warnings)
        if failed == 0 and warned == 0:
            head = f"**{self.suite}**: all {total} expectations passed"
        elif failed == 0:
            head = f"**{self.suite}**: passed, with {warned} of {total} expectations WARNING"
        else:
            head = f"**{self.suite}**: {failed} of {total} expectations FAILED"
            if warned:
                head += f" ({_plural(warned, 'warning')})"
        rows = [(o.expectation, _result(o), o.observed, o.expected, ", ".join(o.sample))
                 for o in self.outcomes]
        return "\n".join([head, "", *md_table(
            ("expectation", "result", "observed", "expected", "sample"), rows)])


def _result(o: ExpectationOutcome) -> str:
    return "pass" if o.success else "**FAIL**" if o.severity == ERROR else "**WARN**"


def _short(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= _VALUE_CHARS else value[: _VALUE_CHARS - 1] + "…"
        return repr(text)
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _share(value: float) -> str:
    return f"{value:.1%}"


# --------------------------------------------------------------------------------------
# The GX context: one per process, created on first use (importing GX takes seconds).


def _quiet_gx_logging(*, after_import: bool) -> None:
    """Keep GX's DEBUG/INFO chatter (metric registry, type lookups) out of the run's logs.

    The outcomes carry what matters. A level someone configured on purpose is left alone.
    """
    root = logging.getLogger("great_expectations")
    if root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    if after_import:
        # This module sets INFO on its own logger at import ("Created temporary directory
        # ... for ephemeral docs site" on every ephemeral context).
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


@cache
def _gx() -> SimpleNamespace:
    _quiet_gx_logging(after_import=False)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx_logging(after_import=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas("trending")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    return SimpleNamespace(gx=gx, gxe=gxe, context=context, batch=batch_definition,
                           validations={})


def warm_up() -> None:
    """Import GX and create the context now (a one-off cost of a few seconds per process)."""
    _gx()


def _validation(name: str, expectations: list[Any]) -> Any:
    g = _gx()
    suite = g.context.suites.add(g.gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return g.gx.ValidationDefinition(data=g.batch, suite=suite, name=name)


def _run(validation: Any, frame: pd.DataFrame, result_format: dict[str, Any]) -> list[Any]:
    return list(validation.run(batch_parameters={"dataframe": frame},
                               result_format=result_format).results)


def _exception_message(result: Any) -> str | None:
    info = result.exception_info or {}
    if not isinstance(info, Mapping):
        return None
    # Either one {raised_exception, exception_message} dict, or one per failed metric.
    candidates = [info] if "raised_exception" in info else list(info.values())
    for entry in candidates:
        if isinstance(entry, Mapping) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "exception while validating")
    return None


# --------------------------------------------------------------------------------------
# Landing batch suite (row-level GX)


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
                  fmt: Callable[[Any, Mapping[str, Any]], str] = lambda v, _: _short(v),
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
                note = f"{column} is {kind} {_short(values.iloc[position])}"
                old = not_text.iloc[position]
                not_text.iloc[position] = f"{old}; {note}" if isinstance(old, str) else note
            values = values.map(str)
        values = values.astype(str)
        text[column] = values
        replaced = values.str.contains("\ufffd", regex=False).to_numpy(dtype=bool)
        for position in np.flatnonzero(replaced):
            note = f"{column} {_short(values.iloc[position])}"
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
        return {_META_KEY: key}

    lo_chars, hi_chars = limits.synopsis_chars
    lo_year, hi_year = limits.years

    def rows_render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        n = int(result.get("observed_value") or 0)
        if n == 0:
            return "0 rows: the file has a header but no data rows", []
        return _plural(n, "row"), []

    def columns_render(result: Mapping[str, Any]) -> tuple[str, list[str]]:
        missing = [c for c in LANDING_COLUMNS if c not in frame.columns]
        if not missing:
            return f"all {len(LANDING_COLUMNS)} present", []
        found = ", ".join(map(str, frame.columns)) or "none"
        return f"missing: {', '.join(missing)} (found: {found})", []

    def raw_year(value: Any, row: Mapping[str, Any]) -> str:
        position = row.get(_ROW)
        if position is None or "year" not in frame.columns:
            return _short(value)
        return _short(frame["year"].iloc[int(position) - 1])

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
        observed = f"{bad} of {total} rows ({_share(share)}) have no canonical genre"
        if bad:
            observed += " and are not trained on"
        tags = frame["genres"] if "genres" in frame.columns else None

        def fmt(_: Any, row: Mapping[str, Any]) -> str:
            if tags is None or row.get(_ROW) is None:
                return "no canonical genre"
            return _short(tags.iloc[int(row[_ROW]) - 1])

        return observed, _rows_sample(result, _HAS_GENRE, fmt) if bad else []

    def chars_fmt(value: Any, _: Mapping[str, Any]) -> str:
        if isinstance(value, float) and not math.isnan(value):
            return f"{int(value):,} chars"
        return _short(value)

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
                    f"at most {_share(limits.max_no_genre_share)} without", ERROR, ("genres",),
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
    g = _gx()
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
        "partial_unexpected_count": _PARTIAL_UNEXPECTED,
        "unexpected_index_column_names": [_ROW, "id"] if "id" in derived.columns else [_ROW],
    }
    name = f"{BATCH_SUITE_NAME}-{uuid.uuid4().hex}"
    validation = _validation(name, [c.expectation for c in runnable])
    try:
        results = _run(validation, derived, result_format)
    finally:
        g.context.suites.delete(name)
    by_key = {(r.expectation_config.meta or {}).get(_META_KEY): r for r in results}
    for check in runnable:
        result = by_key.get(check.key)
        error = _exception_message(result) if result is not None else "GX returned no result"
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


# --------------------------------------------------------------------------------------
# Training table suite (profile evaluated by GX)


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
                fmt: Callable[[Any], str] = _short) -> list[str]:
    """'<id>: <value>' for the first offending rows (or just ids / values)."""
    positions = np.flatnonzero(mask)[: _PARTIAL_UNEXPECTED]
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
        return "no nulls" if limit == 0 else f"<= {_share(limit)} null"

    def row_count() -> tuple[list[_Metric], str, list[str]]:
        return [_Metric("", n, low=min_rows)], _plural(n, "row"), []

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
            return f"{len(value):,} chars" if isinstance(value, str) and value else _short(value)

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
            return metrics, f"lowest: {weakest} with {_plural(counts[weakest], 'title')}", []
        observed = f"{len(below)} of {len(genres)} genres below {min_support}"
        return metrics, observed, [f"{g}: {counts[g]}" for g in below[:SAMPLE_SIZE]]

    def duplicate_ids() -> tuple[list[_Metric], str, list[str]]:
        total = input_rows if input_rows is not None else n + duplicate_ids_replaced
        rate = duplicate_ids_replaced / total if total else 0.0
        return [_Metric("", rate, high=limits.max_duplicate_id_rate)], \
            f"{_share(rate)} ({duplicate_ids_replaced} of {total} input rows replaced by a " \
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
            f"{_share(rate)} ({count} titles share their synopsis with another)", sample

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
                over.append(f"{column}: {_share(share)}")
        if not metrics:
            return metrics, "no columns to check", []
        worst = max(metrics, key=lambda m: m.value)
        observed = (f"{len(over)} of {len(metrics)} columns over their limit" if over
                    else f"largest: {worst.part} {_share(worst.value)}")
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
                  f"<= {_share(limits.max_duplicate_synopsis_rate)} of titles",
                  ("description",), duplicate_synopses),
        _Profiled("kind", "expect_column_values_to_be_in_set(kind)",
                  "in {" + ", ".join(limits.kinds) + "}", ("kind",),
                  in_set("kind", limits.kinds, "kinds")),
        _Profiled("year", "expect_column_values_to_be_between(year)",
                  f"{limits.years[0]}–{limits.years[1]}", ("year",), year),
        _Profiled("null_rates", f"expect_column_values_to_not_be_null({', '.join(other)})",
                  ", ".join(f"{c} <= {_share(max_null(c))}" for c in other) or "-", (),
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
                  f"<= {_share(limits.max_duplicate_id_rate)}", (), duplicate_ids),
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
    g = _gx()
    if "profile" not in g.validations:
        g.validations["profile"] = _validation(f"{SUITE_NAME}_profile", [
            g.gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="greater", column_B="lesser", or_equal=True,
                meta={_META_KEY: "bounds"}),
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
    result = _run(_profile_validation(), profile, {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": ["check", "part", "bound"],
    })[0]
    error = _exception_message(result)
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
