"""Great Expectations suite for the training table.

The Dagster asset check (wired elsewhere) calls `validate_training_table` and shows the
returned `SuiteOutcome` in the UI; this module knows nothing about Dagster.

Great Expectations 1.x runs in an ephemeral (in-memory) context, one per call: a pandas
data source with a whole-dataframe batch definition, an `ExpectationSuite` and a
`ValidationDefinition` run with the frame as batch parameter. Values GX cannot look at
directly (description length, label count, unknown labels, one 0/1 column per genre) are
derived in a copy of the frame before validating. The no-genre share is about rows that
are *not* in the table, so it is a plain computed check (see `_no_genre_share_outcome`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

# Great Expectations 1.x sends usage analytics (to a remote endpoint) unless this is set
# before `great_expectations` is first imported; pipeline pods and CI have no business
# phoning home. setdefault keeps an explicit opt-in by the operator working.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

SUITE_NAME = "training_table"
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

# Derived columns live in a copy of the frame; the prefix keeps them apart from real ones.
_N_LABELS = "__gx_n_labels"
_UNKNOWN_LABELS = "__gx_unknown_labels"
_SUPPORT_PREFIX = "__gx_support::"
_META_KEY = "trending_check"


@dataclass(frozen=True)
class ExpectationOutcome:
    """One line of the suite's report."""

    expectation: str  # e.g. "expect_column_values_to_be_unique(id)"
    success: bool
    observed: str  # human-readable observed value, e.g. "3 rows share a duplicated id"
    expected: str  # human-readable expectation, e.g. "unique" or ">= 500 rows"
    sample: list[str]  # up to 5 offending values or row ids


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def to_markdown(self) -> str:
        """A summary line, then expectation | result | observed | expected | sample."""
        failed = len(self.failures)
        total = len(self.outcomes)
        if self.success:
            head = f"**{self.suite}**: all {total} expectations passed"
        else:
            head = f"**{self.suite}**: {failed} of {total} expectations FAILED"
        lines = [
            head,
            "",
            "| expectation | result | observed | expected | sample |",
            "| --- | --- | --- | --- | --- |",
        ]
        for o in self.outcomes:
            cells = [
                o.expectation,
                "pass" if o.success else "**FAIL**",
                o.observed,
                o.expected,
                ", ".join(o.sample),
            ]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines)


def _md_cell(text: str) -> str:
    # Labels are joined by "|", which would split a markdown table cell.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


# --------------------------------------------------------------------------------------
# Check specifications: a GX expectation plus how to turn its result into readable text.


@dataclass
class _Check:
    key: str  # stable key, stored in the expectation's meta to find its result again
    name: str  # ExpectationOutcome.expectation
    expected: str
    needs: tuple[str, ...]  # source columns; missing ones -> not run, reported as failure
    expectations: list[Any]  # GX expectations (several for the per-genre support)
    render: Callable[[list[Any]], tuple[str, list[str]]]


def _short(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= _VALUE_CHARS else value[: _VALUE_CHARS - 1] + "…"
        return repr(text)
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _map_sample(
    result: Mapping[str, Any], column: str, fmt: Callable[[Any], str] = _short
) -> list[str]:
    """'<id>: <value>' for the first offending rows, or just the values without ids."""
    index_rows = result.get("partial_unexpected_index_list")
    sample: list[str] = []
    if index_rows and isinstance(index_rows[0], Mapping) and "id" in index_rows[0]:
        for row in index_rows:
            item = str(row["id"]) if column == "id" else f"{row['id']}: {fmt(row.get(column))}"
            if item not in sample:
                sample.append(item)
    else:
        for value in result.get("partial_unexpected_list") or []:
            item = fmt(value)
            if item not in sample:
                sample.append(item)
    return sample[:SAMPLE_SIZE]


def _map_render(
    what: str, column: str, fmt: Callable[[Any], str] = _short
) -> Callable[[list[Any]], tuple[str, list[str]]]:
    """Observed text for a column map expectation: 'k of n <what>' plus a sample."""

    def render(results: list[Any]) -> tuple[str, list[str]]:
        result = results[0].result or {}
        bad = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        missing = int(result.get("missing_count") or 0)
        checked = total - missing
        if bad == 0:
            return f"0 of {checked} {what}", []
        return f"{bad} of {checked} {what}", _map_sample(result, column, fmt)

    return render


def _null_render(column: str) -> Callable[[list[Any]], tuple[str, list[str]]]:
    def render(results: list[Any]) -> tuple[str, list[str]]:
        result = results[0].result or {}
        bad = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        if bad == 0:
            return f"no nulls in {total} rows", []
        # Null values are useless as a sample; name the row ids when there is an id column.
        rows = result.get("partial_unexpected_index_list") or []
        ids = [str(r["id"]) for r in rows if isinstance(r, Mapping) and "id" in r]
        # A null id names nothing, so that case has no sample.
        sample = ids if column != "id" else []
        return f"{bad} of {total} null", sample[:SAMPLE_SIZE]

    return render


def _unique_render(results: list[Any]) -> tuple[str, list[str]]:
    result = results[0].result or {}
    bad = int(result.get("unexpected_count") or 0)
    total = int(result.get("element_count") or 0)
    if bad == 0:
        return f"{total} distinct ids", []
    counts = result.get("partial_unexpected_counts") or []
    sample = [str(c["value"]) for c in counts if "value" in c]
    if not sample:
        sample = [str(v) for v in dict.fromkeys(result.get("partial_unexpected_list") or [])]
    return f"{bad} rows share a duplicated id", sample[:SAMPLE_SIZE]


def _row_count_render(results: list[Any]) -> tuple[str, list[str]]:
    observed = (results[0].result or {}).get("observed_value")
    return (_plural(int(observed), "row") if observed is not None else "unknown"), []


def _columns_render(results: list[Any]) -> tuple[str, list[str]]:
    missing = [r.expectation_config.kwargs["column"] for r in results if not r.success]
    if not missing:
        return f"all {len(results)} present", []
    return "missing: " + ", ".join(missing), missing[:SAMPLE_SIZE]


def _support_render(genres: Sequence[str], min_support: int):
    def render(results: list[Any]) -> tuple[str, list[str]]:
        support: dict[str, int] = {}
        for r in results:
            genre = r.expectation_config.kwargs["column"][len(_SUPPORT_PREFIX) :]
            value = (r.result or {}).get("observed_value")
            support[genre] = int(value) if value is not None else 0
        if not support:
            return "no genres to check", []
        # Lowest support first: the genres that fail, or the weakest one if none does.
        order = {g: i for i, g in enumerate(genres)}
        ranked = sorted(genres, key=lambda g: (support.get(g, 0), order[g]))
        below = [g for g in ranked if support.get(g, 0) < min_support]
        if not below:
            weakest = ranked[0]
            return f"lowest: {weakest} with {_plural(support.get(weakest, 0), 'title')}", []
        observed = f"{len(below)} of {len(support)} genres below {min_support}"
        return observed, [f"{g}: {support.get(g, 0)}" for g in below[:SAMPLE_SIZE]]

    return render


# --------------------------------------------------------------------------------------
# Derived columns


def _split_labels(value: Any) -> list[str]:
    if not isinstance(value, str) or value == "":
        return []
    return [part.strip() for part in value.split(LABEL_SEPARATOR)]


def _derived_frame(table: pd.DataFrame, genres: Sequence[str]) -> pd.DataFrame:
    """A copy of the table with the derived columns the GX expectations look at."""
    frame = table.copy()
    if "labels" not in frame.columns:
        return frame
    known = set(genres)
    parts = [_split_labels(v) for v in frame["labels"]]
    derived: dict[str, Any] = {
        # Empty parts ("Drama||Comedy") do not count as labels; they show up as unknown.
        _N_LABELS: [sum(1 for p in ps if p) for ps in parts],
        _UNKNOWN_LABELS: [
            LABEL_SEPARATOR.join(p or repr(p) for p in ps if p not in known) or None for ps in parts
        ],
    }
    for genre in genres:
        derived[_SUPPORT_PREFIX + genre] = [int(genre in ps) for ps in parts]
    extra = pd.DataFrame(derived, index=frame.index)
    # The unknown-label column is strings or None: keep it object so GX sees real nulls.
    extra[_UNKNOWN_LABELS] = extra[_UNKNOWN_LABELS].astype(object)
    return pd.concat([frame, extra], axis=1)


# --------------------------------------------------------------------------------------
# The suite


def _build_checks(
    gxe: Any, genres: Sequence[str], min_rows: int, min_support: int, has_split: bool
) -> list[_Check]:
    def meta(key: str) -> dict[str, str]:
        return {_META_KEY: key}

    checks = [
        _Check(
            "row_count",
            "expect_table_row_count_to_be_between",
            f">= {min_rows} rows",
            (),
            [gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, meta=meta("row_count"))],
            _row_count_render,
        ),
        _Check(
            "columns",
            f"expect_column_to_exist({', '.join(REQUIRED_COLUMNS)})",
            "all present",
            (),
            [gxe.ExpectColumnToExist(column=c, meta=meta("columns")) for c in REQUIRED_COLUMNS],
            _columns_render,
        ),
        _Check(
            "id_unique",
            "expect_column_values_to_be_unique(id)",
            "unique",
            ("id",),
            [gxe.ExpectColumnValuesToBeUnique(column="id", meta=meta("id_unique"))],
            _unique_render,
        ),
        _Check(
            "id_not_null",
            "expect_column_values_to_not_be_null(id)",
            "no nulls",
            ("id",),
            [gxe.ExpectColumnValuesToNotBeNull(column="id", meta=meta("id_not_null"))],
            _null_render("id"),
        ),
        _Check(
            "description_not_null",
            "expect_column_values_to_not_be_null(description)",
            "no nulls",
            ("description",),
            [
                gxe.ExpectColumnValuesToNotBeNull(
                    column="description", meta=meta("description_not_null")
                )
            ],
            _null_render("description"),
        ),
        _Check(
            "description_length",
            "expect_column_value_lengths_to_be_between(description)",
            f"1–{MAX_DESCRIPTION_CHARS} characters",
            ("description",),
            [
                gxe.ExpectColumnValueLengthsToBeBetween(
                    column="description",
                    min_value=1,
                    max_value=MAX_DESCRIPTION_CHARS,
                    meta=meta("description_length"),
                )
            ],
            _map_render(
                "descriptions out of range",
                "description",
                lambda v: f"{len(v)} chars" if isinstance(v, str) and v else _short(v),
            ),
        ),
        _Check(
            "kind",
            "expect_column_values_to_be_in_set(kind)",
            "in {" + ", ".join(KINDS) + "}",
            ("kind",),
            [
                gxe.ExpectColumnValuesToBeInSet(
                    column="kind", value_set=list(KINDS), meta=meta("kind")
                )
            ],
            _map_render("kinds not in set", "kind"),
        ),
        _Check(
            "year",
            "expect_column_values_to_be_between(year)",
            f"{MIN_YEAR}–{MAX_YEAR}",
            ("year",),
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="year", min_value=MIN_YEAR, max_value=MAX_YEAR, meta=meta("year")
                )
            ],
            _map_render("years out of range", "year"),
        ),
        _Check(
            "labels_not_null",
            "expect_column_values_to_not_be_null(labels)",
            "no nulls",
            ("labels",),
            [gxe.ExpectColumnValuesToNotBeNull(column="labels", meta=meta("labels_not_null"))],
            _null_render("labels"),
        ),
        _Check(
            "labels_not_empty",
            "expect_column_value_lengths_to_be_between(labels)",
            "not empty",
            ("labels",),
            [
                gxe.ExpectColumnValueLengthsToBeBetween(
                    column="labels", min_value=1, meta=meta("labels_not_empty")
                )
            ],
            _map_render("labels empty", "labels"),
        ),
        _Check(
            "label_count",
            "expect_column_values_to_be_between(number of labels)",
            f"{MIN_LABELS}–{MAX_LABELS} labels per title",
            ("labels",),
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column=_N_LABELS,
                    min_value=MIN_LABELS,
                    max_value=MAX_LABELS,
                    meta=meta("label_count"),
                )
            ],
            _map_render("titles with a bad label count", _N_LABELS, lambda v: f"{v} labels"),
        ),
        _Check(
            "labels_known",
            "expect_column_values_to_be_null(labels not in genres)",
            f"every label one of the {len(genres)} genres",
            ("labels",),
            # One derived column holds each title's labels that are not in `genres` (null
            # when there are none), so the sample names the offending label itself.
            [gxe.ExpectColumnValuesToBeNull(column=_UNKNOWN_LABELS, meta=meta("labels_known"))],
            _map_render(
                "titles with unknown labels",
                _UNKNOWN_LABELS,
                lambda v: str(v),
            ),
        ),
        _Check(
            "support",
            "expect_column_sum_to_be_between(titles per genre)",
            f">= {min_support} titles per genre",
            ("labels",),
            # One 0/1 derived column per genre; its sum is the genre's support.
            [
                gxe.ExpectColumnSumToBeBetween(
                    column=_SUPPORT_PREFIX + g, min_value=min_support, meta=meta("support")
                )
                for g in genres
            ],
            _support_render(list(genres), min_support),
        ),
    ]
    if has_split:
        checks.append(
            _Check(
                "split",
                "expect_column_values_to_be_in_set(split)",
                "in {" + ", ".join(SPLITS) + "}",
                ("split",),
                [
                    gxe.ExpectColumnValuesToBeInSet(
                        column="split", value_set=list(SPLITS), meta=meta("split")
                    )
                ],
                _map_render("splits not in set", "split"),
            )
        )
    return checks


def _no_genre_share_outcome(
    kept_rows: int, rows_without_genre: int, max_no_genre_share: float
) -> ExpectationOutcome:
    # Plain computed check, not a GX expectation: the titles without a canonical genre were
    # dropped before the table was built, so no column of the validated frame holds them
    # and GX has no expectation that compares an outside count with the row count.
    total = kept_rows + rows_without_genre
    share = rows_without_genre / total if total else 0.0
    return ExpectationOutcome(
        expectation="share of titles without a canonical genre (computed)",
        success=share <= max_no_genre_share,
        observed=f"{share:.1%} ({rows_without_genre} of {total} titles)",
        expected=f"<= {max_no_genre_share:.1%}",
        sample=[],
    )


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


def _outcome(check: _Check, results: list[Any]) -> ExpectationOutcome:
    errors = [m for r in results if (m := _exception_message(r))]
    if errors:
        return ExpectationOutcome(
            check.name, False, f"not evaluated: {errors[0]}", check.expected, []
        )
    if len(results) != len(check.expectations):
        return ExpectationOutcome(
            check.name, False, "not evaluated: GX returned no result", check.expected, []
        )
    success = all(r.success for r in results)
    observed, sample = check.render(results)
    return ExpectationOutcome(check.name, success, observed, check.expected, sample)


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


def validate_training_table(
    table: pd.DataFrame,
    genres: Sequence[str],
    *,
    min_rows: int,
    min_support: int,
    max_no_genre_share: float,
    rows_without_genre: int,
) -> SuiteOutcome:
    """Validate the training table with a Great Expectations suite.

    `genres` are the canonical genres the labels must come from; `rows_without_genre` is
    the number of titles dropped from the table for having no canonical genre.
    """
    # Imported here: importing great_expectations takes seconds.
    _quiet_gx_logging(after_import=False)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx_logging(after_import=True)
    genres = list(dict.fromkeys(genres))
    frame = _derived_frame(table, genres)
    checks = _build_checks(gxe, genres, min_rows, min_support, "split" in table.columns)

    outcomes_by_key: dict[str, ExpectationOutcome] = {}
    runnable: list[_Check] = []
    for check in checks:
        missing = [c for c in check.needs if c not in table.columns]
        if missing:
            outcomes_by_key[check.key] = ExpectationOutcome(
                check.name,
                False,
                f"not evaluated: column {', '.join(missing)} missing",
                check.expected,
                [],
            )
        elif check.expectations:
            runnable.append(check)
        else:  # e.g. no genres at all: nothing to evaluate
            observed, sample = check.render([])
            outcomes_by_key[check.key] = ExpectationOutcome(
                check.name, True, observed, check.expected, sample
            )

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas(SUITE_NAME)
        .add_dataframe_asset(SUITE_NAME)
        .add_batch_definition_whole_dataframe(SUITE_NAME)
    )
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for check in runnable:
        for expectation in check.expectations:
            suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    validation = gx.ValidationDefinition(data=batch_definition, suite=suite, name=SUITE_NAME)
    result_format: dict[str, Any] = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": _PARTIAL_UNEXPECTED,
    }
    if "id" in frame.columns:
        result_format["unexpected_index_column_names"] = ["id"]
    run = validation.run(batch_parameters={"dataframe": frame}, result_format=result_format)

    # GX reorders results; the key in each expectation's meta finds them again.
    results_by_key: dict[str, list[Any]] = {}
    for result in run.results:
        key = (result.expectation_config.meta or {}).get(_META_KEY)
        results_by_key.setdefault(key, []).append(result)
    for check in runnable:
        outcomes_by_key[check.key] = _outcome(check, results_by_key.get(check.key, []))

    outcomes = [outcomes_by_key[c.key] for c in checks if c.key in outcomes_by_key]
    outcomes.append(_no_genre_share_outcome(len(table), rows_without_genre, max_no_genre_share))
    return SuiteOutcome(
        suite=SUITE_NAME,
        success=all(o.success for o in outcomes),
        outcomes=outcomes,
    )
