"""One landing batch judged: read it, run its suite, decide whether it is quarantined.

No Dagster here: `assess_batch` turns the bytes of a landing file into a `BatchAssessment`
that says, in plain language, why the batch is (or is not) quarantined, and builds the
quarantine record. The asset stores the record (resources/quarantine.py) and the Dagster
check shows the same findings (checks/data_quality.py).

Quarantined: the file cannot be read as a table, or an `error` expectation of the batch
suite fails. Accepted with warnings: only `warn` expectations fail (ids repeated within the
batch, tags not in the taxonomy) or the loader noted something (extra columns, extension
and content disagree). Nothing here raises on bad content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from trending_assets.checks.batch_suite import BatchLimits, validate_landing_batch
from trending_assets.checks.outcomes import ExpectationOutcome, SuiteOutcome
from trending_assets.ml.landing_file import LandingLoad, accepted_table, load_landing_file
from trending_assets.ml.limits import LandingLimits
from trending_assets.ml.taxonomy import Taxonomy

ACTION = ("Fix the file and upload it again under the same name (or upload a corrected file "
          "under a new name); the new content is ingested on the next run and this record "
          "moves to quarantine/.history/. Until then the batch is not trained on.")


@dataclass
class BatchAssessment:
    load: LandingLoad
    suite: SuiteOutcome | None  # None when the file could not be read as a table

    @property
    def name(self) -> str:
        return self.load.name

    @property
    def quarantined(self) -> bool:
        return bool(self.load.problems) or self.suite is None or not self.suite.success

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return self.suite.failures if self.suite is not None else []

    @property
    def warning_outcomes(self) -> list[ExpectationOutcome]:
        return self.suite.warnings if self.suite is not None else []

    @property
    def reasons(self) -> list[str]:
        """Why the batch is quarantined, one plain-language message per failed check."""
        reasons = list(self.load.problems)
        for outcome in self.failures:
            if outcome.observed.startswith("not evaluated: column"):
                continue  # the missing column is reported once, by the columns check
            reasons.append(outcome.reason())
            if outcome.summary == "text is valid UTF-8" and self.load.encoding_note:
                reasons.append(self.load.encoding_note)
        return reasons

    @property
    def warnings(self) -> list[str]:
        """What a person should know about a batch, quarantined or not."""
        return list(self.load.notes) + [o.reason() for o in self.warning_outcomes]

    @property
    def rows(self) -> int:
        return len(self.load.frame)

    def accepted(self) -> pd.DataFrame:
        """The table to store for an accepted batch."""
        if self.quarantined:
            raise ValueError(f"{self.name} is quarantined; it has no accepted table")
        return accepted_table(self.load.frame)

    def summary(self) -> str:
        if self.quarantined:
            return f"QUARANTINED: {self.reasons[0]}" + (
                f" (+{len(self.reasons) - 1} more)" if len(self.reasons) > 1 else "")
        if self.warnings:
            return f"accepted with {len(self.warnings)} warning(s): {self.warnings[0]}"
        return f"accepted: {self.rows} rows, all expectations passed"

    def failed_expectations(self) -> list[dict[str, Any]]:
        return [{"expectation": o.expectation, "check": o.summary, "severity": o.severity,
                 "observed": o.observed, "expected": o.expected, "sample": o.sample}
                for o in self.failures + self.warning_outcomes]

    def record(self, **context: Any) -> dict[str, Any]:
        """The quarantine record: what failed, with examples, and what to do about it."""
        return {
            "file": self.name,
            "sha256": self.load.sha256,
            "size_bytes": self.load.size_bytes,
            "format": self.load.format,
            "compression": self.load.compression,
            "rows_read": self.rows,
            "limit_exceeded": self.load.limit_exceeded,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "failed_expectations": self.failed_expectations(),
            "action": ACTION,
            **context,
        }


def assess_batch(data: bytes, name: str, taxonomy: Taxonomy,
                 limits: BatchLimits | None = None, read_limits: LandingLimits | None = None,
                 *, size_bytes: int | None = None, sha256: str | None = None) -> BatchAssessment:
    """Read and validate one landing file; never raises on bad content. `size_bytes` and
    `sha256` describe the stored file when `data` is not all of it (see load_landing_file)."""
    load = load_landing_file(data, name, read_limits, size_bytes=size_bytes, sha256=sha256)
    if load.problems:
        return BatchAssessment(load, None)
    suite = validate_landing_batch(load.frame, taxonomy, limits or BatchLimits())
    return BatchAssessment(load, suite)
