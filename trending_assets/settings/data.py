"""Where things are stored and tracked, and what the data must look like."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from trending_assets.ml.limits import LandingLimits
from trending_assets.settings.base import (
    BUNDLED,
    BUNDLED_OOD_FILE,
    FloatRange,
    IntRange,
    _require_order,
    _Strict,
)


class StorageSettings(_Strict):
    root: str = Field(description="artifact root: a local directory or s3://bucket/prefix")
    landing: str = Field(description="where landing files arrive: a directory or s3:// prefix")
    s3_endpoint_url: str | None = None
    cache: str = Field(
        ".trending/cache",
        description="local folder for copies of remote inputs (an s3:// bert.model_path)")
    seed_sample: bool = Field(
        True, description="place the bundled sample in an empty landing folder on first run"
    )


class TrackingSettings(_Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "trending-now"
    entity: str | None = None
    dir: str = Field(description="where offline run folders are written")


class SplitSettings(_Strict):
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    salt: str = "trending-now-split-v1"



class TitleBounds(_Strict):
    """What a valid title row looks like; shared by the landing-batch and training suites."""

    kinds: tuple[str, ...] = Field(("movie", "tv"), min_length=1)
    synopsis_chars: IntRange = IntRange(min=10, max=5000)
    year: IntRange = IntRange(min=1900, max=2100)


class BatchGateSettings(_Strict):
    """Per landing file (raw_titles): a batch failing these is quarantined."""

    min_rows: int = Field(1, ge=1, description="a batch with fewer data rows is quarantined")
    max_no_genre_share: float = Field(
        0.5, ge=0, le=1,
        description="largest share of a batch's rows with no canonical genre (only non-genre "
                    "or unknown tags)",
    )


class DriftLevels(_Strict):
    """WARN above `warn`, blocking ERROR above `error`."""

    warn: float = Field(ge=0)
    error: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> DriftLevels:
        _require_order(self, "warn", "error")
        return self


class DriftSettings(_Strict):
    """training_data against the last accepted version (what the models were trained on)."""

    genre_psi: DriftLevels = DriftLevels(warn=0.1, error=0.25)
    length_psi: DriftLevels = DriftLevels(warn=0.1, error=0.25)
    vocabulary_novelty: DriftLevels = DriftLevels(warn=0.02, error=0.05)
    length_bins: int = Field(10, ge=2, le=50, description="quantile bins for the length PSI")
    vocabulary_sample_rows: int = Field(
        2000, ge=100, description="rows (chosen by id hash) whose words are compared"
    )
    vocabulary_min_count: int = Field(
        3, ge=1, description="a new word counts as novel from this many uses in the sample"
    )


class DataSettings(_Strict):
    taxonomy_file: str = "genres.yaml"
    split: SplitSettings = SplitSettings()
    min_rows: int = Field(500, ge=1, description="training_data row-count floor")
    max_no_genre_share: float = Field(
        0.25, ge=0, le=1, description="largest share of titles left with no canonical genre"
    )
    bounds: TitleBounds = TitleBounds()
    batch: BatchGateSettings = BatchGateSettings()
    landing_limits: LandingLimits
    labels_per_title: IntRange = IntRange(min=1, max=3)
    label_cardinality: FloatRange = FloatRange(min=1.0, max=3.0)
    max_duplicate_id_rate: float = Field(
        0.5, ge=0, le=1, description="share of input rows replaced by a later row with their id"
    )
    max_duplicate_synopsis_rate: float = Field(
        0.02, ge=0, le=1, description="share of titles whose synopsis another title also has"
    )
    max_null_rate: dict[str, float] = Field(
        default_factory=lambda: {"id": 0.0, "title": 0.01, "kind": 0.0, "description": 0.0,
                                 "genres": 0.0, "year": 0.0, "labels": 0.0},
        description="largest share of null/empty values per training_data column",
    )
    drift: DriftSettings = DriftSettings()
    ood_file: str | None = Field(
        BUNDLED, description="titles from other platforms (landing-file columns), scored as the "
                             "`ood` evaluation slice: `bundled` = the set shipped in "
                             "trending_assets/data; a path; null = no out-of-distribution "
                             "evaluation")
    ood_max_rows: int = Field(
        3000, ge=1, description="OOD titles evaluated (a stable sample by id hash): bounds the "
                                "cost of scoring every candidate and champion on them")

    def ood_path(self) -> Path | None:
        """The out-of-distribution titles file, or None when there is none to score."""
        if self.ood_file is None:
            return None
        return BUNDLED_OOD_FILE if self.ood_file == BUNDLED else Path(self.ood_file)

    @model_validator(mode="after")
    def _null_rates_are_shares(self) -> DataSettings:
        bad = {k: v for k, v in self.max_null_rate.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"max_null_rate: values must be shares between 0 and 1: {bad}")
        return self

