"""Loading configs/: base.yaml + one overlay per environment, validated, with errors that
name the file and the key; run snapshots of the configuration.

This is the only module that reads environment variables (`APP_ENV`, `TRENDING_CONFIG_DIR`,
`TRENDING_ROOT`, `TRENDING_CODE_VERSION`, `DAGSTER_CURRENT_IMAGE`, `DAGSTER_HOME`). Everything
else receives a validated `Settings` object or plain values taken from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from trending_assets.ml import families
from trending_assets.ml.config import ConfigError, config_layers, deep_merge, read_yaml
from trending_assets.settings.base import BUNDLED, REPO_ROOT
from trending_assets.settings.schema import Settings


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
    folder = Path(config_dir or os.environ.get("TRENDING_CONFIG_DIR") or REPO_ROOT / "configs")
    layers = config_layers(env, folder)
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
    for family in families.names():
        for i, gate in enumerate(settings.gates.of(family).slices):
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
    return read_yaml(Path(settings.config_dir) / settings.data.taxonomy_file)

