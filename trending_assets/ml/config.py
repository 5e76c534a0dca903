"""Reading configs/ without Dagster: the strict base of every parameter schema, the YAML
layers (base.yaml + <env>.yaml) merged, and one section validated by its ml/ model.

Parameter schemas (`TfidfParams`, `LinearParams`, `XGBoostParams`, `BertParams`,
`LandingLimits`) declare every field without a default: configs/base.yaml holds the one
value of each key. `trending_assets.settings` composes the same models and reads the same
files through these functions; the stand-alone trainers use `section_params`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENVIRONMENTS = ("local", "staging", "production")

Model = TypeVar("Model", bound=BaseModel)


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


class StrictModel(BaseModel):
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


def read_yaml(path: Path) -> dict[str, Any]:
    """One YAML file as a mapping; ConfigError names the file and what is wrong."""
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


def config_layers(env: str, folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """base.yaml and <env>.yaml of `folder`, in the order they apply."""
    if env not in ENVIRONMENTS:
        raise ConfigError(
            f"APP_ENV={env!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}")
    return [(folder / name, read_yaml(folder / name)) for name in ("base.yaml", f"{env}.yaml")]


def merged_config(env: str = "local", folder: Path = REPO_CONFIGS) -> dict[str, Any]:
    """The YAML layers merged, as written (no paths resolved, nothing validated)."""
    merged: dict[str, Any] = {}
    for _, data in config_layers(env, folder):
        merged = deep_merge(merged, data)
    return merged


def params(model: type[Model], values: Mapping[str, Any] | BaseModel, **overrides: Any
           ) -> Model:
    """`model` from the keys of `values` it declares (a settings section, or a wider
    parameter object such as BertParams for LoopSettings), with `overrides` on top."""
    if isinstance(values, BaseModel):
        values = values.model_dump()
    return model.model_validate(
        {**{k: v for k, v in values.items() if k in model.model_fields}, **overrides})


def section_params(model: type[Model], section: str, env: str = "local",
                   folder: Path = REPO_CONFIGS, **overrides: Any) -> Model:
    """The `section` of the configuration files as `model` (its keys of the section, with
    overrides): the trainers' parameters, or a part such as the BERT loop's settings.
    Unknown keys in the files are caught where the whole configuration is validated
    (trending_assets.settings)."""
    values = merged_config(env, folder).get(section)
    if not isinstance(values, dict):
        raise ConfigError(f"{folder}: no `{section}:` section in base.yaml or {env}.yaml")
    try:
        return params(model, values, **overrides)
    except ValidationError as exc:
        raise ConfigError(f"{folder}: section `{section}`: {exc}") from exc
