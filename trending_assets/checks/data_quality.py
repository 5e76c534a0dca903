"""The blocking data gate on training_data, as a Dagster check result."""

from collections.abc import Sequence

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from trending_assets.checks.gx_suites import validate_training_table
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import Settings


def training_data_check(
    table: pd.DataFrame, genres: Sequence[str], rows_without_genre: int, settings: Settings,
    taxonomy: Taxonomy,
) -> AssetCheckResult:
    outcome = validate_training_table(
        table, genres, min_rows=settings.data.min_rows, min_support=taxonomy.min_support,
        max_no_genre_share=settings.data.max_no_genre_share,
        rows_without_genre=rows_without_genre,
    )
    return AssetCheckResult(
        check_name="training_data_quality",
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR,
        description=(
            "all expectations passed" if outcome.success else
            "failed: " + "; ".join(f"{f.expectation} (observed {f.observed}, expected "
                                   f"{f.expected})" for f in outcome.failures)
        ),
        metadata={
            "suite": outcome.suite,
            "expectations": len(outcome.outcomes),
            "failed": len(outcome.failures),
            "results": MetadataValue.md(outcome.to_markdown()),
        },
    )
