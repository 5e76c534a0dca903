"""The strict base of every settings model, paths and ranges shared by the domains."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, model_validator

from trending_assets.ml.config import ENVIRONMENTS, ConfigError, StrictModel

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = "bundled"
BUNDLED_OOD_FILE = REPO_ROOT / "trending_assets" / "data" / "streaming_ood_titles_genres.csv.gz"
# The settings models share the ml/ parameter schemas' base: unknown keys and booleans
# given for numbers are refused the same way everywhere.
_Strict = StrictModel

__all__ = ["BUNDLED", "BUNDLED_OOD_FILE", "ENVIRONMENTS", "REPO_ROOT", "ConfigError",
           "FloatRange", "IntRange"]


def _require_order(model: BaseModel, low: str, high: str) -> None:
    """Field `low` must not be above field `high`."""
    low_value, high_value = getattr(model, low), getattr(model, high)
    if low_value > high_value:
        raise ValueError(f"{low} ({low_value}) must not be above {high} ({high_value})")


class _OrderedRange(_Strict):
    """A closed range; subclasses give `min` and `max` their type."""

    @model_validator(mode="after")
    def _ordered(self) -> _OrderedRange:
        _require_order(self, "min", "max")
        return self


class IntRange(_OrderedRange):
    min: int
    max: int


class FloatRange(_OrderedRange):
    min: float
    max: float

