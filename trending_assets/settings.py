"""Configuration: `configs/base.yaml` + one overlay per environment, validated by pydantic.

This is the only module that reads environment variables (`APP_ENV`, `TRENDING_CONFIG_DIR`,
`TRENDING_ROOT`, `TRENDING_CODE_VERSION`). Everything else receives a validated
`Settings` object or plain values taken from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("local", "staging", "production")


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names file, key and problem."""


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Strict):
    root: str = Field(description="artifact root: a local directory or s3://bucket/prefix")
    landing: str = Field(description="where landing files arrive: a directory or s3:// prefix")
    s3_endpoint_url: str | None = None
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


class _OrderedRange(_Strict):
    """A closed range; subclasses give `min` and `max` their type."""

    @model_validator(mode="after")
    def _ordered(self) -> _OrderedRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be above max ({self.max})")
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
        if self.warn > self.error:
            raise ValueError(f"warn ({self.warn}) must not be above error ({self.error})")
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

    @model_validator(mode="after")
    def _null_rates_are_shares(self) -> DataSettings:
        bad = {k: v for k, v in self.max_null_rate.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"max_null_rate: values must be shares between 0 and 1: {bad}")
        return self


class TfidfSettings(_Strict):
    ngram_max: int = Field(2, ge=1, le=3)
    min_df: int = Field(2, ge=1)
    max_features: int = Field(50_000, ge=100)
    sublinear_tf: bool = True


class ReferenceSettings(_Strict):
    C: float = Field(4.0, gt=0)
    max_iter: int = Field(1000, ge=10)
    balanced: bool = True


class XGBoostSettings(_Strict):
    """Mirrors ml.xgboost_model.XGBoostParams (see that module for what each part does)."""

    n_estimators: int = Field(400, ge=1)
    max_depth: int = Field(4, ge=1)
    learning_rate: float = Field(0.2, gt=0, le=1)
    max_bin: int = Field(16, ge=2)
    k_best_features: int = Field(300, ge=10)
    early_stopping_rounds: int = Field(20, ge=1)
    min_child_weight: float = Field(1.0, ge=0)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    multi_strategy: Literal["one_output_per_tree", "multi_output_tree"] = "one_output_per_tree"
    linear_folds: int = Field(
        3, ge=0, description="out-of-fold linear genre scores as features; 0 = none")
    linear_C: float = Field(4.0, gt=0)
    linear_max_rows: int = Field(
        20_000, ge=0, description="rows per fold for the logistic scorers; 0 = all rows")
    nb_scores: bool = Field(
        True, description="naive Bayes log-odds per genre as features (needs linear_folds >= 2)")
    boost_from_linear: bool = Field(
        True, description="trees start from the linear scores (needs linear_folds >= 2)")
    rare_genre_weight: float = Field(
        0.0, ge=0, le=1, description="row weight exponent for rare genres; 0 = off")
    n_jobs: int = Field(0, ge=0, description="0 = the CPU limit (affinity, cgroup quota)")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="cuda (or cuda:N) when a GPU is configured")
    seed: int = 0

    @model_validator(mode="after")
    def _linear_folds_usable(self) -> XGBoostSettings:
        if self.linear_folds == 1:
            raise ValueError("linear_folds must be 0 (off) or at least 2")
        if (self.boost_from_linear or self.nb_scores) and self.linear_folds == 0:
            raise ValueError("boost_from_linear and nb_scores need linear_folds >= 2")
        return self


class BertSettings(_Strict):
    model_path: str | None = Field(
        None, description="Hugging Face BERT-family model folder; empty = the bundled MiniLM"
    )
    max_length: int = Field(64, ge=8, le=512)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping; 0 = off")
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores")


class GateSettings(_Strict):
    min_macro_f1: float = Field(ge=0, le=1)
    min_micro_f1: float = Field(ge=0, le=1)


class GatesSettings(_Strict):
    reference: GateSettings
    xgboost: GateSettings
    bert: GateSettings


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
    config_dir: str = Field(description="folder the YAML files were read from (set by the loader)")

    @model_validator(mode="after")
    def _split_leaves_training_data(self) -> Settings:
        if self.data.split.val_fraction + self.data.split.test_fraction >= 0.6:
            raise ValueError("data.split: val_fraction + test_fraction must stay below 0.6")
        return self

    def fingerprint(self) -> str:
        """sha256 of the validated configuration, recorded with every artifact.

        Where the files were read from and the code version are recorded separately, so
        they are left out: the same configuration gives the same hash in any checkout."""
        values = self.model_dump(mode="json", exclude={"config_dir", "code_version"})
        blob = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    try:
        data = yaml.safe_load(text) or {}
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
        if value is None or "://" in value or Path(value).is_absolute():
            return value
        return str((root / value).resolve())

    raw = deep_merge(raw, {})
    for section, key in (("storage", "root"), ("storage", "landing"), ("tracking", "dir"),
                         ("bert", "model_path")):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get(key), str):
            raw[section] = {**raw[section], key: resolve(raw[section][key])}
    return raw


def load_settings(
    env: str | None = None,
    config_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load base.yaml + <env>.yaml (+ overrides), validate, and return Settings.

    `env` defaults to $APP_ENV, then "local". Errors raise ConfigError naming the file,
    the key and the problem.
    """
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
    root = Path(os.environ.get("TRENDING_ROOT") or REPO_ROOT)
    merged = _resolve_local_paths(merged, root)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "<top level>"
            origin = _key_origin(err["loc"], layers)
            problems.append(f"{origin}: key '{key}': {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from exc
    if settings.environment != env:
        raise ConfigError(
            f"{folder / f'{env}.yaml'}: key 'environment' is {settings.environment!r} "
            f"but APP_ENV selects {env!r}"
        )
    return settings


def load_taxonomy_config(settings: Settings) -> dict[str, Any]:
    """The raw genre taxonomy mapping (validated by ml.taxonomy.Taxonomy.from_config)."""
    return _read_yaml(Path(settings.config_dir) / settings.data.taxonomy_file)


class SettingsResource(ConfigurableResource):
    """Validated settings for assets and checks; `overrides_json` adjusts a single run."""

    env: str | None = None
    config_dir: str | None = None
    overrides_json: str = "{}"

    def get(self) -> Settings:
        try:
            overrides = json.loads(self.overrides_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"settings resource: overrides_json is not JSON: {exc}") from exc
        return _load_cached(self.env, self.config_dir, json.dumps(overrides, sort_keys=True))

    def taxonomy(self) -> dict[str, Any]:
        return load_taxonomy_config(self.get())


@lru_cache(maxsize=8)
def _load_cached(env: str | None, config_dir: str | None, overrides: str) -> Settings:
    return load_settings(env, config_dir, json.loads(overrides))
