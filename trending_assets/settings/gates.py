"""Registration gates per model family, and the registry."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, RootModel, model_validator

from trending_assets.ml import families
from trending_assets.settings.base import _Strict

GATE_METRICS = ("macro_f1", "micro_f1", "micro_precision", "micro_recall")


def _check_metric_path(path: str) -> str:
    """`<metric>` (overall) or `<slice>/<metric>`, e.g. `macro_f1`, `kind=tv/macro_f1`."""
    slice_name, _, metric = path.rpartition("/")
    if metric not in GATE_METRICS or (path.count("/") and not slice_name):
        raise ValueError(f"metric {path!r}: use one of {', '.join(GATE_METRICS)}, optionally "
                         "prefixed with a slice name and '/', e.g. 'kind=tv/macro_f1'")
    return path


class SliceGate(_Strict):
    """Value floors on one evaluation slice (`kind=movie`, `kind=tv`, `ood`, ...)."""

    slice: str = Field(min_length=1)
    min_macro_f1: float | None = Field(None, ge=0, le=1)
    min_micro_f1: float | None = Field(None, ge=0, le=1)
    required: bool = Field(
        False, description="a missing slice fails the gate; otherwise it is skipped, and the "
                           "record says so (the OOD set is evaluated only when present)")


class GenreFloor(_Strict):
    """No genre with at least `min_support` test titles may score an F1 below `min_f1`."""

    min_support: int = Field(ge=1)
    min_f1: float = Field(ge=0, le=1)


class ChangeThreshold(_Strict):
    """How the candidate must compare with the production champion on one metric.

    The change is measured in the better direction (candidate - champion when higher is
    better); it must be at least `absolute`, and at least `relative` times the champion's
    value. A negative bound allows that much regression; 0 means "no worse"."""

    metric: str
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    absolute: float | None = None
    relative: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> ChangeThreshold:
        _check_metric_path(self.metric)
        if self.absolute is None and self.relative is None:
            raise ValueError(f"change threshold on {self.metric!r}: set `absolute`, "
                             "`relative` or both")
        return self


class GateSettings(_Strict):
    """One model family's registration gate (trending_assets/ml/gate.py applies it).

    Value thresholds (overall, per slice, per genre) are checked on every candidate; the
    change thresholds only when a production champion exists."""

    min_macro_f1: float = Field(ge=0, le=1)
    min_micro_f1: float = Field(ge=0, le=1)
    genre_floor: GenreFloor | None = None
    slices: tuple[SliceGate, ...] = ()
    champion: tuple[ChangeThreshold, ...] = ()
    promote_to: Literal["staging", "production"] = Field(
        "production", description="a blessed challenger gets `staging`, or `staging` and "
                                  "`production` (it becomes the champion)")
    first_run_promote_to: Literal["staging", "production"] = Field(
        "staging", description="with no champion yet (value thresholds only): production "
                               "here lets the first model become champion automatically")

    @model_validator(mode="after")
    def _unique_slices(self) -> GateSettings:
        names = [s.slice for s in self.slices]
        if len(names) != len(set(names)):
            raise ValueError(f"slices: each slice may appear once, got {names}")
        return self


class GatesSettings(RootModel[dict[str, GateSettings]]):
    """One gate per registered model family (ml/families.py), by family name:
    `gates.xgboost` or `gates.of("xgboost")`."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _one_per_family(self) -> GatesSettings:
        unknown = sorted(set(self.root) - set(families.names()))
        if unknown:
            raise ValueError(f"no model family {', '.join(unknown)} (families: "
                             f"{', '.join(families.names())})")
        missing = [name for name in families.names() if name not in self.root]
        if missing:
            raise ValueError(f"give a gate for {', '.join(missing)}")
        return self

    def of(self, family: str) -> GateSettings:
        return self.root[family]

    def __getattr__(self, name: str) -> GateSettings:
        root = self.__dict__.get("root", {})
        if name in root:
            return root[name]
        return super().__getattr__(name)  # type: ignore[misc]


class ModelCardText(_Strict):
    """The written parts of every model card (the numbers come from the evaluation)."""

    intended_use: str = Field(min_length=1)
    limitations: tuple[str, ...] = ()


class RegistrySettings(_Strict):
    """Where registered versions are mirrored, and how reproductions are judged."""

    backend: Literal["store", "wandb"] = Field(
        "store", description="store: versions in the artifact store only; wandb: also logged "
                             "to W&B and linked into its model registry (pending while offline)")
    wandb_registry: str = Field(
        "model", pattern=r"^[A-Za-z0-9_-]+$",
        description="W&B registry name: versions link to wandb-registry-<name>/<model>")
    reproduce_tolerance: dict[str, float] = Field(
        default_factory=dict,
        description="per family, the largest |recorded - retrained| test metric a "
                    "reproduction may show; a family not named here has its registry "
                    "default (ml/families.py)")
    model_card: ModelCardText = ModelCardText(
        intended_use="Suggest genres for a movie or TV show from its synopsis.")
    orphan_grace_seconds: int = Field(
        3600, ge=0,
        description="`cli registry repair` leaves uncommitted records and unreferenced blobs "
                    "younger than this alone: they may belong to a registration in flight")

    @model_validator(mode="after")
    def _tolerances(self) -> RegistrySettings:
        bad = {k: v for k, v in self.reproduce_tolerance.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"reproduce_tolerance: values must be between 0 and 1: {bad}")
        unknown = sorted(set(self.reproduce_tolerance) - set(families.names()))
        if unknown:
            raise ValueError(f"reproduce_tolerance: no model family {', '.join(unknown)}")
        return self

    def tolerance(self, family: str) -> float:
        configured = self.reproduce_tolerance.get(family)
        return families.family(family).reproduce_tolerance if configured is None else configured

