"""Configuration: `configs/base.yaml` + one overlay per environment, validated by pydantic.

This is the only module that reads environment variables (`APP_ENV`, `TRENDING_CONFIG_DIR`,
`TRENDING_ROOT`, `TRENDING_CODE_VERSION`, `DAGSTER_CURRENT_IMAGE`, `DAGSTER_HOME`). Everything
else receives a validated `Settings` object or plain values taken from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from dagster import ConfigurableResource, InitResourceContext
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from resources.notify import channel_url_problem
from resources.storage import ArtifactStoreResource
from trending_assets.ml.limits import LandingLimits

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("local", "staging", "production")
BUNDLED = "bundled"
BUNDLED_OOD_FILE = Path(__file__).resolve().parent / "data" / "streaming_ood_titles_genres.csv.gz"


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names file, key and problem."""


_NUMBERS = {int, float}


def _is_number(annotation: Any) -> bool:
    """int, float, or either of them or None."""
    if annotation in _NUMBERS:
        return True
    return isinstance(annotation, UnionType) and bool(
        set(get_args(annotation)) - {NoneType}) and set(get_args(annotation)) <= {
        *_NUMBERS, NoneType}


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for a number: `epochs: true` is a mistake, not 1 epoch.
        if isinstance(value, bool) and info.field_name is not None and _is_number(
                cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(value).lower()} is a boolean; give a number")
        return value


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
    landing_limits: LandingLimits = LandingLimits()
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


class TfidfSettings(_Strict):
    ngram_max: int = Field(2, ge=1, le=3)
    min_df: int = Field(2, ge=1, le=1000)
    max_features: int = Field(50_000, ge=100, le=2_000_000)
    sublinear_tf: bool = True


class ReferenceSettings(_Strict):
    C: float = Field(4.0, gt=0, le=1e6)
    max_iter: int = Field(1000, ge=10, le=100_000)
    balanced: bool = True


class XGBoostSettings(_Strict):
    """Mirrors ml.xgboost_model.XGBoostParams (see that module for what each part does)."""

    n_estimators: int = Field(400, ge=1, le=20_000)
    max_depth: int = Field(4, ge=1, le=32)
    learning_rate: float = Field(0.2, gt=0, le=1)
    max_bin: int = Field(16, ge=2, le=4096)
    k_best_features: int = Field(300, ge=10, le=2_000_000)
    early_stopping_rounds: int = Field(20, ge=1, le=10_000)
    min_child_weight: float = Field(1.0, ge=0, le=1e6)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    multi_strategy: Literal["one_output_per_tree", "multi_output_tree"] = "one_output_per_tree"
    linear_folds: int = Field(
        3, ge=0, le=20, description="out-of-fold linear genre scores as features; 0 = none")
    linear_C: float = Field(4.0, gt=0, le=1e6)
    linear_max_rows: int = Field(
        20_000, ge=0, le=10_000_000,
        description="rows per fold for the logistic scorers; 0 = all rows")
    nb_scores: bool = Field(
        True, description="naive Bayes log-odds per genre as features (needs linear_folds >= 2)")
    boost_from_linear: bool = Field(
        True, description="trees start from the linear scores (needs linear_folds >= 2)")
    rare_genre_weight: float = Field(
        0.0, ge=0, le=1, description="row weight exponent for rare genres; 0 = off")
    n_jobs: int = Field(0, ge=0, le=512, description="0 = the CPU limit (affinity, cgroup quota)")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="cuda (or cuda:N) when a GPU is configured")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _linear_folds_usable(self) -> XGBoostSettings:
        if self.linear_folds == 1:
            raise ValueError("linear_folds must be 0 (off) or at least 2")
        if (self.boost_from_linear or self.nb_scores) and self.linear_folds == 0:
            raise ValueError("boost_from_linear and nb_scores need linear_folds >= 2")
        return self


class BertSettings(_Strict):
    model_path: str | None = Field(
        None, description="Hugging Face BERT-family model folder (saved with save_pretrained): "
                          "a local folder or s3://bucket/prefix; empty = the bundled MiniLM"
    )
    max_length: int = Field(64, ge=8, le=512)
    epochs: int = Field(2, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, ge=0, le=1e3, description="gradient clipping; 0 = off")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    threads: int = Field(0, ge=0, le=512, description="torch CPU threads; 0 = all cores")
    # Training loop (trending_assets/ml/bert/loop.py); batch_size is per optimizer step over
    # all processes, so changing `processes` or `grad_accum_steps` keeps the optimisation.
    grad_accum_steps: int = Field(1, ge=1, le=1024,
                                  description="micro-batches per optimizer step")
    head_dropout: float = Field(0.1, ge=0, lt=1)
    pad_multiple: int = Field(8, ge=1, le=128,
                              description="batch widths round up to a multiple")
    compile: bool = Field(False, description="torch.compile, one graph per padded width")
    early_stopping_patience: int = Field(
        0, ge=0, le=100,
        description="stop after this many epochs without a better val macro-F1; 0 = off")
    checkpoint_every_steps: int = Field(
        0, ge=0, le=10_000_000,
        description="checkpoint cadence in optimizer steps; 0 = at epoch ends only")
    log_every_steps: int = Field(20, ge=1, le=10_000_000)
    precision: Literal["auto", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on a GPU, fp32 on CPU; fp32: fp32 everywhere")
    processes: int = Field(
        1, ge=1, le=16, description="data-parallel worker processes per node (torchrun); 1 = one "
                             "plain process. On Kubernetes the pod's GPU count equals this")

    @model_validator(mode="after")
    def _model_path_readable(self) -> BertSettings:
        if self.model_path and "://" in self.model_path and not self.model_path.startswith(
                "s3://"):
            raise ValueError(
                f"model_path {self.model_path!r}: use a local folder or s3://bucket/prefix "
                "holding a model saved with save_pretrained (nothing is downloaded from a "
                "model hub)")
        return self


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


class GatesSettings(_Strict):
    reference: GateSettings
    xgboost: GateSettings
    bert: GateSettings


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
        default_factory=lambda: {"reference": 0.0, "xgboost": 0.0, "bert": 0.02},
        description="largest |recorded - retrained| test metric a reproduction may show")
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
        missing = {"reference", "xgboost", "bert"} - set(self.reproduce_tolerance)
        if missing:
            raise ValueError(f"reproduce_tolerance: give a tolerance for {sorted(missing)}")
        return self


# --- automation and alerts --------------------------------------------------------------


class LandingSensorSettings(_Strict):
    """How the landing sensor lists the landing area (see trending_assets/automation/landing.py)."""

    layout: Literal["flat", "dated"] = Field(
        "flat", description="flat: every file directly under the landing area (each tick lists "
                            "it all; for a local folder); dated: files under a date folder "
                            "(`date_format`) and a tick lists only the last `lookback_days`")
    date_format: str = Field("%Y-%m-%d", description="strftime of the date folder (UTC)")
    lookback_days: int = Field(
        1, ge=0, le=31, description="dated layout: date folders listed besides today's")
    page_size: int = Field(1000, ge=1, le=1000, description="keys per S3 LIST request")
    max_runs_per_tick: int = Field(
        1000, ge=1, description="new files beyond this wait for the next tick")
    minimum_interval_seconds: int = Field(30, ge=5)


class RetrainSettings(_Strict):
    """When newly accepted landing data retrains the graph below raw_titles."""

    min_new_rows: int = Field(
        1000, ge=1, description="accepted rows landed since training_data last materialized")
    max_wait_minutes: int | None = Field(
        1440, ge=1, description="fewer new rows still retrain once the oldest waited this "
                                "long; empty = only `min_new_rows` triggers")
    min_interval_minutes: int = Field(
        60, ge=0, description="no automatic retrain sooner than this after the last attempt")


class FreshnessWindow(_Strict):
    warn_hours: float | None = Field(None, gt=0)
    fail_hours: float = Field(gt=0)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> FreshnessWindow:
        if self.warn_hours is not None and self.warn_hours >= self.fail_hours:
            raise ValueError(f"warn_hours ({self.warn_hours}) must be below fail_hours "
                             f"({self.fail_hours})")
        return self


class RetrainRequestSettings(_Strict):
    uri: str | None = Field(
        None, description="where retrain requests (JSON) are written: a folder or s3:// prefix; "
                          "empty = <storage.root>/triggers")
    minimum_interval_seconds: int = Field(30, ge=5)
    max_request_bytes: int = Field(
        65_536, ge=1024, le=16 * 2**20,
        description="a larger request file is rejected without being parsed")
    model_paths: tuple[str, ...] = Field(
        (), description="base-model locations a request may set as bert.model_path, besides "
                        "the configured one: absolute folders or s3:// prefixes; a location "
                        "inside one is allowed too")

    @field_validator("model_paths")
    @classmethod
    def _absolute_locations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        relative = [v for v in value if not (v.startswith("s3://") or Path(v).is_absolute())]
        if relative:
            raise ValueError(f"use absolute folders or s3:// prefixes, not {relative}")
        return value


class AutomationSettings(_Strict):
    sensors_running: bool = Field(
        False, description="sensors, the automation sensor and schedules start RUNNING")
    landing: LandingSensorSettings = LandingSensorSettings()
    retrain: RetrainSettings = RetrainSettings()
    propagate: bool = Field(
        True, description="declarative automation below raw_titles (else schedules and "
                          "requests only)")
    on_demand_assets: tuple[str, ...] = Field(
        ("xgboost_hyperparameters",),
        description="assets below raw_titles that automation never materializes")
    automation_interval_seconds: int = Field(60, ge=5)
    freshness: dict[str, FreshnessWindow] = Field(
        default_factory=dict, description="asset name -> time window it must update within")
    weekly_retrain_cron: str | None = Field(
        "0 3 * * 1", description="cron of the full retrain schedule; empty = no schedule")
    timezone: str = "UTC"
    retrain_requests: RetrainRequestSettings = RetrainRequestSettings()


class AlertChannel(_Strict):
    kind: Literal["slack", "webhook", "log"]
    url: str | None = Field(None, description="webhook URL written in the config")
    url_env: str | None = Field(
        None, description="or the environment variable holding it (secrets stay out of YAML)")

    @model_validator(mode="after")
    def _has_target(self) -> AlertChannel:
        if self.kind != "log" and not (self.url or self.url_env):
            raise ValueError(f"a {self.kind} channel needs `url` or `url_env`")
        return self

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        problem = None if url is None else channel_url_problem(url)
        if problem:
            raise ValueError(f"the channel URL {problem}")
        return url


class AlertSettings(_Strict):
    channels: tuple[AlertChannel, ...] = (AlertChannel(kind="log"),)
    ui_base_url: str = Field("http://127.0.0.1:3000", description="links in alert messages")
    timeout_seconds: float = Field(
        10.0, gt=0, description="per delivery, for all of it: connect, send, whole reply")
    minimum_interval_seconds: int = Field(30, ge=5)
    max_events_per_tick: int = Field(
        200, ge=1, description="per tick: freshness events read, and latest executions of "
                               "each check looked at (failures beyond it between two ticks "
                               "are not alerted)")


# --- Kubernetes: one pod per step (k8s_job_executor; trending_assets/k8s.py builds it) ----

_CPU_QUANTITY = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"
_MEMORY_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
_QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
                      "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def quantity_value(quantity: str) -> float:
    """A Kubernetes quantity ('500m', '2', '16Gi') as a plain number, to compare sizes."""
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(quantity)


class PodSize(_Strict):
    cpu: str = Field(pattern=_CPU_QUANTITY, description="cores: '2', '0.5' or '500m'")
    memory: str = Field(pattern=_MEMORY_QUANTITY, description="bytes: '512Mi', '16Gi'")


class Toleration(_Strict):
    key: str = Field(min_length=1)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _value_matches_operator(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"toleration {self.key!r}: operator Exists takes no value")
        if self.operator == "Equal" and self.value is None:
            raise ValueError(f"toleration {self.key!r}: operator Equal needs a value "
                             "(or use operator: Exists)")
        return self


class NodePool(_Strict):
    """Where a step may run: the pool's node labels and the taints its pods tolerate."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class StepPod(_Strict):
    requests: PodSize
    limits: PodSize
    gpus: int = Field(0, ge=0, description="GPUs for the container (k8s.gpu_resource limit)")
    pool: str | None = Field(None, description="a key of k8s.node_pools; empty = any node")
    shm_size: str | None = Field(
        None, pattern=_MEMORY_QUANTITY,
        description="/dev/shm in memory: torch workers and NCCL need more than the 64Mi default")
    deadline_seconds: int | None = Field(
        None, ge=60, description="the Job is stopped after this long (activeDeadlineSeconds)")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> StepPod:
        for resource in ("cpu", "memory"):
            request = getattr(self.requests, resource)
            limit = getattr(self.limits, resource)
            if quantity_value(request) > quantity_value(limit):
                raise ValueError(f"requests.{resource} ({request}) is above limits.{resource} "
                                 f"({limit}); Kubernetes rejects such a pod")
        return self


class K8sSettings(_Strict):
    """Pods of the k8s_job_executor: one Kubernetes Job per step (op), sized per step."""

    image: str | None = Field(
        None, description="the image every step Job runs; null = $DAGSTER_CURRENT_IMAGE, which "
                          "the Helm chart sets in the code location's pod")
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource name of a GPU")
    job_ttl_seconds: int = Field(
        86400, ge=0, description="finished Jobs (and their pod logs) are deleted after this")
    backoff_limit: int = Field(
        0, ge=0, description="pod restarts by Kubernetes; Dagster's retry policy retries steps")
    max_concurrent_steps: int | None = Field(None, ge=1, description="pods at once in one run")
    node_pools: dict[str, NodePool] = Field(default_factory=dict)
    default_step: StepPod = StepPod(requests=PodSize(cpu="250m", memory="512Mi"),
                                    limits=PodSize(cpu="1", memory="2Gi"))
    steps: dict[str, StepPod] = Field(
        default_factory=dict, description="op name -> pod size; other steps get default_step")

    @model_validator(mode="after")
    def _pools_exist(self) -> K8sSettings:
        named = {"default_step": self.default_step} | {f"steps.{k}": v
                                                       for k, v in self.steps.items()}
        for where, step in named.items():
            if step.pool is not None and step.pool not in self.node_pools:
                raise ValueError(f"{where}.pool {step.pool!r} is not in node_pools "
                                 f"({', '.join(self.node_pools) or 'none defined'})")
            if step.gpus and step.pool is None:
                raise ValueError(f"{where} asks for {step.gpus} GPU(s) but names no pool: "
                                 "GPU nodes are tainted, set `pool` to one that tolerates them")
        return self


class Settings(_Strict):
    environment: Literal["local", "staging", "production"]
    code_version: str | None = Field(
        None, description="git commit of the code; found with git when empty"
    )
    storage: StorageSettings
    tracking: TrackingSettings
    executor: Literal["multiprocess", "in_process", "k8s"] = "multiprocess"
    data: DataSettings = DataSettings()
    tfidf: TfidfSettings = TfidfSettings()
    reference: ReferenceSettings = ReferenceSettings()
    xgboost: XGBoostSettings = XGBoostSettings()
    bert: BertSettings = BertSettings()
    gates: GatesSettings
    registry: RegistrySettings = RegistrySettings()
    automation: AutomationSettings = AutomationSettings()
    alerts: AlertSettings = AlertSettings()
    k8s: K8sSettings = K8sSettings()
    config_dir: str = Field(description="folder the YAML files were read from (set by the loader)")
    # The taxonomy of a run's configuration snapshot (settings_from_snapshot); None: read the file.
    _taxonomy: dict[str, Any] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _split_leaves_training_data(self) -> Settings:
        if self.data.split.val_fraction + self.data.split.test_fraction >= 0.6:
            raise ValueError("data.split: val_fraction + test_fraction must stay below 0.6")
        return self

    @model_validator(mode="after")
    def _gpu_settings_match_pods(self) -> Settings:
        if self.executor != "k8s":
            return self
        xgboost_gpus = self.k8s.steps.get("xgboost_model", self.k8s.default_step).gpus
        if self.xgboost.device.startswith("cuda") and xgboost_gpus == 0:
            raise ValueError(f"xgboost.device is {self.xgboost.device!r} but "
                             "k8s.steps.xgboost_model.gpus is 0: give the step a GPU or use cpu")
        # torchrun starts bert.processes workers, one per GPU of the pod: the two must agree.
        bert_gpus = self.k8s.steps.get("bert_model", self.k8s.default_step).gpus
        if bert_gpus and (bert_gpus > 1 or self.bert.processes > 1) \
                and self.bert.processes != bert_gpus:
            raise ValueError(
                f"bert.processes ({self.bert.processes}) must equal k8s.steps.bert_model.gpus "
                f"({bert_gpus}): torchrun runs one worker per GPU of the pod; set both to the "
                "same count")
        return self

    def fingerprint(self) -> str:
        """sha256 of the validated configuration, recorded with every artifact.

        Where the files were read from and the code version are recorded separately, so
        they are left out: the same configuration gives the same hash in any checkout."""
        # Automation and alerts decide when and who hears, and k8s which pod runs a step,
        # never what an artifact holds.
        values = self.model_dump(mode="json", exclude={"config_dir", "code_version",
                                                      "automation", "alerts", "k8s"})
        blob = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so the first value would be ignored without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
                          "cannot be decoded; save the file as UTF-8") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Overlay wins key by key; nested mappings merge, everything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _key_origin(loc: tuple[Any, ...], layers: list[tuple[Path, dict[str, Any]]]) -> str:
    """The last file that set the key at `loc` (or its nearest parent)."""
    for depth in range(len(loc), 0, -1):
        for path, data in reversed(layers):
            node: Any = data
            for part in loc[:depth]:
                if isinstance(node, dict) and part in node:
                    node = node[part]
                else:
                    break
            else:
                return str(path)
    return " + ".join(str(path) for path, _ in layers)


def _resolve_local_paths(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """Relative local paths in the config are relative to the repository (or TRENDING_ROOT)."""

    def resolve(value: str | None) -> str | None:
        if value is None or value == BUNDLED or "://" in value or Path(value).is_absolute():
            return value
        return str((root / value).resolve())

    raw = deep_merge(raw, {})
    for section, key in (("storage", "root"), ("storage", "landing"), ("storage", "cache"),
                         ("tracking", "dir"), ("bert", "model_path"), ("data", "ood_file")):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get(key), str):
            raw[section] = {**raw[section], key: resolve(raw[section][key])}
    return raw


def _merged_configuration(
    env: str | None, config_dir: str | Path | None, overrides: dict[str, Any] | None,
) -> tuple[str, Path, dict[str, Any], list[tuple[Path, dict[str, Any]]]]:
    """base.yaml + <env>.yaml (+ overrides), merged, with the values the environment sets:
    the environment name, the folder, the merged mapping and the layers it came from."""
    env = env or os.environ.get("APP_ENV") or "local"
    if env not in ENVIRONMENTS:
        raise ConfigError(
            f"APP_ENV={env!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}"
        )
    folder = Path(config_dir or os.environ.get("TRENDING_CONFIG_DIR") or REPO_ROOT / "configs")
    layers = [(folder / "base.yaml", _read_yaml(folder / "base.yaml")),
              (folder / f"{env}.yaml", _read_yaml(folder / f"{env}.yaml"))]
    if overrides:
        layers.append((Path("<overrides>"), overrides))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = deep_merge(merged, data)
    merged.setdefault("environment", env)
    merged["config_dir"] = str(folder.resolve())
    if not merged.get("code_version"):
        merged["code_version"] = os.environ.get("TRENDING_CODE_VERSION") or None
    if os.environ.get("DAGSTER_CURRENT_IMAGE") and not (merged.get("k8s") or {}).get("image"):
        merged["k8s"] = {**(merged.get("k8s") or {}), "image": os.environ["DAGSTER_CURRENT_IMAGE"]}
    root = Path(os.environ.get("TRENDING_ROOT") or REPO_ROOT)
    return env, folder, _resolve_local_paths(merged, root), layers


def _validated(merged: dict[str, Any], layers: list[tuple[Path, dict[str, Any]]],
               env: str, env_file: Path) -> Settings:
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "<top level>"
            origin = _key_origin(err["loc"], layers)
            problems.append(f"{origin}: key '{key}': {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from exc
    problems = [f"{_key_origin(loc, layers)}: key '{'.'.join(map(str, loc))}': {problem}"
                for loc, problem in _reference_problems(settings)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    if settings.environment != env:
        raise ConfigError(
            f"{env_file}: key 'environment' is {settings.environment!r} "
            f"but APP_ENV selects {env!r}"
        )
    return settings


def _reference_problems(settings: Settings) -> list[tuple[tuple[Any, ...], str]]:
    """What a valid-looking configuration refers to and cannot be found or parsed: found at
    load time instead of hours later in the step that uses it."""
    from dagster._utils.schedules import is_valid_cron_schedule  # what schedules accept

    from trending_assets.ml.report import is_slice_name

    problems: list[tuple[tuple[Any, ...], str]] = []
    taxonomy = Path(settings.config_dir) / settings.data.taxonomy_file
    if not taxonomy.is_file():
        problems.append((("data", "taxonomy_file"), f"no file {taxonomy}"))
    ood = settings.data.ood_path()
    if ood is not None and settings.data.ood_file != BUNDLED and not ood.is_file():
        problems.append((("data", "ood_file"), f"no file {ood} (`bundled` = the shipped set, "
                                              "null = no out-of-distribution evaluation)"))
    model_path = settings.bert.model_path
    if model_path and "://" not in model_path and not Path(model_path).is_dir():
        problems.append((("bert", "model_path"), f"no folder {model_path} (null = the "
                                                 "bundled MiniLM)"))
    cron = settings.automation.weekly_retrain_cron
    if cron and not is_valid_cron_schedule(cron):
        problems.append((("automation", "weekly_retrain_cron"),
                         f"{cron!r} is not a cron schedule of five fields (minute hour "
                         "day-of-month month day-of-week), e.g. '0 3 * * 1'"))
    try:
        ZoneInfo(settings.automation.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append((("automation", "timezone"),
                         f"{settings.automation.timezone!r} is not an IANA time zone, e.g. UTC "
                         "or Europe/Berlin"))
    kinds = settings.data.bounds.kinds
    for family in ("reference", "xgboost", "bert"):
        for i, gate in enumerate(getattr(settings.gates, family).slices):
            if not is_slice_name(gate.slice, kinds):
                problems.append((("gates", family, "slices", i, "slice"),
                                 f"{gate.slice!r} is not a slice the evaluation produces: "
                                 f"{', '.join(f'kind={k}' for k in kinds)}, ood or "
                                 "ood:source=<platform>"))
    return problems


def load_settings(
    env: str | None = None,
    config_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load base.yaml + <env>.yaml (+ overrides), validate, and return Settings.

    `env` defaults to $APP_ENV, then "local". Errors raise ConfigError naming the file,
    the key and the problem.
    """
    env, folder, merged, layers = _merged_configuration(env, config_dir, overrides)
    return _validated(merged, layers, env, folder / f"{env}.yaml")


def configuration_snapshot(
    env: str | None = None,
    config_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a run reads from configs/, resolved and checked now: the merged settings
    and the genre taxonomy. `settings_from_snapshot` turns it back into Settings."""
    settings = load_settings(env, config_dir, overrides)
    _, _, merged, _ = _merged_configuration(env, config_dir, overrides)
    return {"settings": merged, "taxonomy": load_taxonomy_config(settings)}


def settings_from_snapshot(snapshot: dict[str, Any], source: str) -> Settings:
    """Settings (with their taxonomy) from a `configuration_snapshot`; `source` names it in
    errors."""
    merged = snapshot["settings"]
    settings = _validated(merged, [(Path(source), merged)], merged["environment"], Path(source))
    settings._taxonomy = snapshot["taxonomy"]
    return settings


def dagster_home() -> Path | None:
    """$DAGSTER_HOME, where the Dagster instance lives; None when unset."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) if home else None


def load_taxonomy_config(settings: Settings) -> dict[str, Any]:
    """The raw genre taxonomy mapping (validated by ml.taxonomy.Taxonomy.from_config): the
    run's snapshot when `settings` came from one, else the file."""
    if settings._taxonomy is not None:
        return settings._taxonomy
    return _read_yaml(Path(settings.config_dir) / settings.data.taxonomy_file)


class SettingsResource(ConfigurableResource):
    """Validated settings for assets and checks; `overrides_json` adjusts a single run.

    Inside a run with `snapshots` set, the configuration is resolved once per run: the run's
    first step stores it under runs/<run id>/configuration.json and every step of the run
    (each its own process with the multiprocess and Kubernetes executors) reads that
    snapshot, so a file edited while the run goes on never splits it in two configurations.
    """

    env: str | None = None
    config_dir: str | None = None
    overrides_json: str = "{}"
    snapshots: ArtifactStoreResource | None = None  # where each run's snapshot is kept
    _run_id: str | None = PrivateAttr(None)
    _run_settings: Settings | None = PrivateAttr(None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._run_id = None if context.run is None else context.run.run_id

    def _overrides(self) -> dict[str, Any]:
        try:
            return json.loads(self.overrides_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"settings resource: overrides_json is not JSON: {exc}") from exc

    def get(self) -> Settings:
        if self._run_id is None or self.snapshots is None:
            return _load_cached(self.env, self.config_dir,
                                json.dumps(self._overrides(), sort_keys=True))
        if self._run_settings is None:
            self._run_settings = self._run_snapshot(self._run_id)
        return self._run_settings

    def _run_snapshot(self, run_id: str) -> Settings:
        store = self.snapshots.open()
        key = f"runs/{run_id}/configuration.json"
        if not store.exists(key):
            blob = json.dumps(configuration_snapshot(self.env, self.config_dir,
                                                     self._overrides()), sort_keys=True)
            # Steps running in parallel may both get here: the first write wins for all.
            store.put_if_absent(key, blob.encode())
        return settings_from_snapshot(json.loads(store.get_bytes(key)), store.uri_of(key))

    def taxonomy(self) -> dict[str, Any]:
        return load_taxonomy_config(self.get())


@lru_cache(maxsize=8)
def _load_cached(env: str | None, config_dir: str | None, overrides: str) -> Settings:
    return load_settings(env, config_dir, json.loads(overrides))
