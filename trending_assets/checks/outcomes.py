"""What a Great Expectations suite found, as the checks show it: one `ExpectationOutcome`
per expectation, a `SuiteOutcome` per suite with its markdown table, and the few helpers
both suites use to write observed values. No GX or Dagster import: the checks and the
bench read outcomes without paying for either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from trending_assets.ml.markdown import md_table

ERROR = "error"
WARN = "warn"
SAMPLE_SIZE = 5
# GX keeps this many unexpected values per expectation (SUMMARY result format); more than
# SAMPLE_SIZE so that de-duplicating (a duplicated id shows up twice) still leaves five.
SAMPLE_SCAN = 20
_VALUE_CHARS = 60


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
                head += f" ({plural(warned, 'warning')})"
        rows = [(o.expectation, _result(o), o.observed, o.expected, ", ".join(o.sample))
                 for o in self.outcomes]
        return "\n".join([head, "", *md_table(
            ("expectation", "result", "observed", "expected", "sample"), rows)])


def _result(o: ExpectationOutcome) -> str:
    return "pass" if o.success else "**FAIL**" if o.severity == ERROR else "**WARN**"


def short(value: Any) -> str:
    """A value as a sample shows it: null, a quoted (cut) string, 3 not 3.0."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= _VALUE_CHARS else value[: _VALUE_CHARS - 1] + "…"
        return repr(text)
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def plural(n: int, word: str) -> str:
    """'1 row', '2 rows'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def percent(value: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{value:.1%}"
