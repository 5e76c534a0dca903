"""Tests for trending_assets.settings: base + overlay merge, validation messages, paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from trending_assets.settings import (
    ENVIRONMENTS,
    REPO_ROOT,
    ConfigError,
    Settings,
    deep_merge,
    load_settings,
    load_taxonomy_config,
)

CONFIGS = REPO_ROOT / "configs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader reads these variables; the developer's shell must not leak into tests."""
    for name in ("APP_ENV", "TRENDING_CONFIG_DIR", "TRENDING_ROOT", "TRENDING_CODE_VERSION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of configs/ that a test may break."""
    target = tmp_path / "configs"
    shutil.copytree(CONFIGS, target)
    return target


HEADER_ONLY = "id,title,kind,description,genres,year,source\n"


def _edit_yaml(path: Path, patch: dict) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    path.write_text(yaml.safe_dump(deep_merge(data, patch)))


# --- merging per environment -----------------------------------------------------------


def test_every_environment_loads_and_names_itself() -> None:
    for env in ENVIRONMENTS:
        settings = load_settings(env)
        assert isinstance(settings, Settings)
        assert settings.environment == env
        assert settings.config_dir == str(CONFIGS.resolve())


def test_local_overlay_on_base() -> None:
    s = load_settings("local")
    assert s.executor == "multiprocess"
    assert s.tracking.mode == "offline"
    assert s.storage.seed_sample is True  # local.yaml overrides base.yaml's false
    assert s.storage.root == str((REPO_ROOT / ".trending").resolve())
    assert s.storage.landing == str((REPO_ROOT / ".trending" / "landing").resolve())
    assert s.tracking.dir == str((REPO_ROOT / ".trending" / "wandb").resolve())
    # untouched base values
    assert s.bert.epochs == 4
    assert s.bert.batch_size == 32
    assert s.bert.model_path is None
    assert s.xgboost.n_estimators == 400
    assert s.tfidf.ngram_max == 2
    assert s.data.split.salt == "trending-now-split-v1"
    assert s.gates.xgboost.min_macro_f1 == pytest.approx(0.30)
    assert s.gates.bert.min_micro_f1 == pytest.approx(0.40)


def test_staging_overlay_on_base() -> None:
    s = load_settings("staging")
    assert s.executor == "k8s"
    assert s.tracking.mode == "online"
    assert s.tracking.dir == "/tmp/wandb"
    assert s.storage.root == "s3://trending-now-staging/artifacts"
    assert s.storage.landing == "s3://trending-now-staging/landing"
    assert s.storage.seed_sample is False  # base value, not overridden by staging
    # staging trains BERT as validated in base.yaml (batch 32, 4 epochs)
    assert (s.bert.epochs, s.bert.batch_size, s.bert.max_length) == (4, 32, 64)
    assert s.bert.learning_rate == pytest.approx(2e-4)
    # staging keeps the base gates
    assert s.gates.xgboost.min_macro_f1 == pytest.approx(0.30)
    assert s.gates.bert.min_macro_f1 == pytest.approx(0.30)


def test_production_gates_are_stricter_than_staging() -> None:
    prod, staging = load_settings("production"), load_settings("staging")
    assert prod.executor == "k8s"
    assert prod.storage.root == "s3://trending-now-production/artifacts"
    # nested merge keeps the base keys the overlay did not name
    assert (prod.bert.epochs, prod.bert.batch_size, prod.bert.processes) == (4, 32, 2)
    assert prod.gates.xgboost.min_macro_f1 == pytest.approx(0.40)
    assert prod.gates.xgboost.min_micro_f1 == pytest.approx(0.50)
    assert prod.gates.bert.min_macro_f1 == pytest.approx(0.45)
    assert prod.gates.bert.min_micro_f1 == pytest.approx(0.55)
    # production.yaml does not name the reference gate: the base value stays
    assert prod.gates.reference == staging.gates.reference
    for model in ("xgboost", "bert"):
        p, s = getattr(prod.gates, model), getattr(staging.gates, model)
        assert p.min_macro_f1 > s.min_macro_f1
        assert p.min_micro_f1 > s.min_micro_f1


def test_app_env_selects_the_overlay(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().environment == "local"  # default when APP_ENV is unset
    monkeypatch.setenv("APP_ENV", "production")
    assert load_settings().environment == "production"
    assert load_settings("staging").environment == "staging"  # explicit argument wins


def test_config_dir_from_environment(monkeypatch: pytest.MonkeyPatch, config_dir: Path) -> None:
    _edit_yaml(config_dir / "local.yaml", {"xgboost": {"max_depth": 3}})
    monkeypatch.setenv("TRENDING_CONFIG_DIR", str(config_dir))
    s = load_settings("local")
    assert s.config_dir == str(config_dir.resolve())
    assert s.xgboost.max_depth == 3


def test_unknown_environment_names_the_allowed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings("qa")
    message = str(info.value)
    assert "'qa'" in message
    for env in ENVIRONMENTS:
        assert env in message
    monkeypatch.setenv("APP_ENV", "prod")
    with pytest.raises(ConfigError, match=r"'prod'.*local, staging, production"):
        load_settings()


def test_deep_merge_nested_and_replaced() -> None:
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2], "c": 1}
    overlay = {"a": {"y": {"q": 3}, "z": 4}, "b": [3], "c": {"now": "dict"}}
    assert deep_merge(base, overlay) == {
        "a": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}, "b": [3], "c": {"now": "dict"},
    }
    assert base["a"]["y"] == {"p": 1, "q": 2}  # inputs are not modified


# --- validation errors name file, key and problem --------------------------------------


def test_typo_key_in_overlay_names_file_and_key(config_dir: Path) -> None:
    _edit_yaml(config_dir / "local.yaml", {"tfidf": {"ngram_mx": 2}})
    with pytest.raises(ConfigError) as info:
        load_settings("local", config_dir)
    message = str(info.value)
    assert "local.yaml" in message
    assert "base.yaml" not in message
    assert "tfidf.ngram_mx" in message
    assert "extra" in message.lower()  # pydantic: "Extra inputs are not permitted"


def test_bad_value_in_base_names_file_key_and_problem(config_dir: Path) -> None:
    _edit_yaml(config_dir / "base.yaml", {"bert": {"epochs": 0}})
    with pytest.raises(ConfigError) as info:
        load_settings("local", config_dir)  # local.yaml does not override bert.epochs
    message = str(info.value)
    assert str(config_dir / "base.yaml") in message
    assert "bert.epochs" in message
    assert "greater than or equal to 1" in message


def test_overlay_value_shadows_bad_base_value(config_dir: Path) -> None:
    # an overlay that sets bert.epochs: 3 keeps the broken base value from validation
    _edit_yaml(config_dir / "staging.yaml", {"bert": {"epochs": 3}})
    _edit_yaml(config_dir / "base.yaml", {"bert": {"epochs": 0}})
    assert load_settings("staging", config_dir).bert.epochs == 3


def test_wrong_type_names_the_file_that_set_it(config_dir: Path) -> None:
    _edit_yaml(config_dir / "staging.yaml", {"xgboost": {"max_depth": "deep"}})
    with pytest.raises(ConfigError) as info:
        load_settings("staging", config_dir)
    message = str(info.value)
    assert "staging.yaml" in message
    assert "xgboost.max_depth" in message
    assert "integer" in message


def test_missing_required_key_names_the_section_file(config_dir: Path) -> None:
    local = config_dir / "local.yaml"
    data = yaml.safe_load(local.read_text())
    del data["storage"]["root"]
    local.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_settings("local", config_dir)
    message = str(info.value)
    assert "local.yaml" in message  # the file holding the storage section without a root
    assert "storage.root" in message
    assert "Field required" in message


def test_invalid_literal_is_reported(config_dir: Path) -> None:
    _edit_yaml(config_dir / "production.yaml", {"executor": "slurm"})
    with pytest.raises(ConfigError) as info:
        load_settings("production", config_dir)
    message = str(info.value)
    assert "production.yaml" in message
    assert "executor" in message
    assert "k8s" in message  # pydantic lists the allowed literals


def test_invalid_yaml_names_the_file(config_dir: Path) -> None:
    broken = config_dir / "local.yaml"
    broken.write_text("storage:\n  root: [unclosed\n  landing: x\n")
    with pytest.raises(ConfigError) as info:
        load_settings("local", config_dir)
    message = str(info.value)
    assert str(broken) in message
    assert "not valid YAML" in message


def test_top_level_list_is_rejected(config_dir: Path) -> None:
    (config_dir / "base.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: the top level must be a mapping"):
        load_settings("local", config_dir)


def test_missing_overlay_file_is_reported(config_dir: Path) -> None:
    (config_dir / "staging.yaml").unlink()
    with pytest.raises(ConfigError) as info:
        load_settings("staging", config_dir)
    assert "staging.yaml" in str(info.value)
    assert "not found" in str(info.value)


def test_environment_key_must_match_app_env(config_dir: Path) -> None:
    _edit_yaml(config_dir / "local.yaml", {"environment": "production"})
    with pytest.raises(ConfigError) as info:
        load_settings("local", config_dir)
    message = str(info.value)
    assert "local.yaml" in message
    assert "'production'" in message and "'local'" in message


def test_split_fractions_must_leave_training_data() -> None:
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        load_settings("local", overrides={"data": {"split": {"val_fraction": 0.3,
                                                             "test_fraction": 0.3}}})


def test_error_in_overrides_is_attributed_to_overrides() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings("local", overrides={"xgboost": {"learning_rate": 5}})
    message = str(info.value)
    assert "<overrides>" in message
    assert "xgboost.learning_rate" in message


# --- overrides, paths, fingerprint ------------------------------------------------------


def test_overrides_win_over_overlay_and_base() -> None:
    s = load_settings("production", overrides={"bert": {"epochs": 7},
                                               "executor": "in_process",
                                               "tfidf": {"min_df": 5}})
    assert s.bert.epochs == 7          # base.yaml says 4
    assert s.bert.processes == 2       # the rest of the production bert section survives
    assert s.executor == "in_process"  # production.yaml says k8s
    assert s.tfidf.min_df == 5         # base.yaml says 2
    assert s.tfidf.max_features == 50000


def test_relative_paths_resolve_against_trending_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRENDING_ROOT", str(tmp_path))
    (tmp_path / "models" / "minilm").mkdir(parents=True)  # a local model_path must exist
    s = load_settings("local", overrides={"bert": {"model_path": "models/minilm"}})
    assert s.storage.root == str((tmp_path / ".trending").resolve())
    assert s.storage.landing == str((tmp_path / ".trending" / "landing").resolve())
    assert s.tracking.dir == str((tmp_path / ".trending" / "wandb").resolve())
    assert s.bert.model_path == str((tmp_path / "models" / "minilm").resolve())


def test_absolute_and_s3_paths_are_left_alone(tmp_path: Path) -> None:
    absolute = str(tmp_path / "elsewhere")
    s = load_settings("local", overrides={
        "storage": {"root": "s3://bucket/prefix", "landing": absolute},
    })
    assert s.storage.root == "s3://bucket/prefix"
    assert s.storage.landing == absolute
    assert s.bert.model_path is None


def test_code_version_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings("local").code_version is None
    monkeypatch.setenv("TRENDING_CODE_VERSION", "abc123")
    assert load_settings("local").code_version == "abc123"
    assert load_settings("local", overrides={"code_version": "zzz"}).code_version == "zzz"


def test_fingerprint_is_stable_and_tracks_values() -> None:
    first = load_settings("local").fingerprint()
    assert len(first) == 16
    int(first, 16)  # hex
    assert load_settings("local").fingerprint() == first
    # overriding a value with the value it already has changes nothing
    assert load_settings("local", overrides={"xgboost": {"max_depth": 4}}).fingerprint() == first
    changed = load_settings("local", overrides={"xgboost": {"max_depth": 7}}).fingerprint()
    assert changed != first
    assert load_settings("local", overrides={"data": {"split": {"salt": "v2"}}}).fingerprint() \
        not in (first, changed)
    assert load_settings("staging").fingerprint() != first


def test_fingerprint_follows_a_file_edit(config_dir: Path) -> None:
    before = load_settings("local", config_dir).fingerprint()
    assert load_settings("local", config_dir).fingerprint() == before
    _edit_yaml(config_dir / "base.yaml", {"reference": {"C": 2.0}})
    after = load_settings("local", config_dir)
    assert after.reference.C == 2.0
    assert after.fingerprint() != before


def test_settings_are_frozen() -> None:
    s = load_settings("local")
    with pytest.raises(ValueError):
        s.bert.epochs = 9  # type: ignore[misc]


def test_taxonomy_config_comes_from_the_config_dir(config_dir: Path) -> None:
    taxonomy = load_taxonomy_config(load_settings("local", config_dir))
    assert taxonomy["min_support"] == 50
    assert taxonomy["genres"]["Drama"] == ["Dramas", "TV Dramas", "Drama",
                                           "Soap Opera / Melodrama"]


def test_ood_file_bundled_follows_the_package_not_the_root(
        config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRENDING_ROOT", str(tmp_path))
    settings = load_settings("local", config_dir)
    assert settings.data.ood_file == "bundled"
    assert settings.data.ood_path() == REPO_ROOT / "trending_assets" / "data" / (
        "streaming_ood_titles_genres.csv.gz")
    assert settings.data.ood_path().is_file()
    (tmp_path / "ood").mkdir()
    (tmp_path / "ood" / "titles.csv").write_text(HEADER_ONLY)  # a named ood_file must exist
    own = load_settings("local", config_dir, {"data": {"ood_file": "ood/titles.csv"}})
    assert own.data.ood_path() == tmp_path / "ood" / "titles.csv"
    assert load_settings("local", config_dir, {"data": {"ood_file": None}}).data.ood_path() is None


# --- problems found at load time, not hours later ----------------------------------------


def _load_error(config_dir: Path, env: str = "local") -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, config_dir)
    return str(info.value)


def test_duplicate_key_is_refused_with_file_and_line(config_dir: Path) -> None:
    local = config_dir / "local.yaml"
    local.write_text(local.read_text() + "executor: in_process\n")  # `executor` is set above
    message = _load_error(config_dir)
    assert str(local) in message and "not valid YAML" in message
    assert "duplicate key 'executor' (first on line 3)" in message


def test_non_utf8_file_names_the_file_and_line(config_dir: Path) -> None:
    base = config_dir / "base.yaml"
    base.write_bytes(base.read_bytes().replace(b"trending-now-split-v1", b"caf\xe9-split", 1))
    message = _load_error(config_dir)
    line = base.read_bytes().split(b"caf\xe9")[0].count(b"\n") + 1
    assert message == (f"{base}: not UTF-8 text: byte 0xe9 on line {line} cannot be decoded; "
                       "save the file as UTF-8")


@pytest.mark.parametrize(("patch", "key", "problem"), [
    ({"bert": {"epochs": True}}, "bert.epochs", "true is a boolean; give a number"),
    ({"xgboost": {"learning_rate": False}}, "xgboost.learning_rate",
     "false is a boolean; give a number"),
    ({"automation": {"weekly_retrain_cron": "0 25 * * 1"}}, "automation.weekly_retrain_cron",
     "'0 25 * * 1' is not a cron schedule of five fields"),
    ({"automation": {"timezone": "Mars/Olympus"}}, "automation.timezone",
     "'Mars/Olympus' is not an IANA time zone"),
    ({"data": {"taxonomy_file": "genre.yaml"}}, "data.taxonomy_file", "no file "),
    ({"data": {"ood_file": "/nowhere/ood.csv"}}, "data.ood_file", "no file /nowhere/ood.csv"),
    ({"bert": {"model_path": "/nowhere/minilm"}}, "bert.model_path",
     "no folder /nowhere/minilm"),
    ({"gates": {"xgboost": {"slices": [{"slice": "kind=mvie", "min_macro_f1": 0.3}]}}},
     "gates.xgboost.slices.0.slice",
     "'kind=mvie' is not a slice the evaluation produces: kind=movie, kind=tv, ood or "
     "ood:source=<platform>"),
])
def test_problems_are_found_at_load_time_naming_file_and_key(
        config_dir: Path, patch: dict, key: str, problem: str) -> None:
    _edit_yaml(config_dir / "staging.yaml", patch)
    message = _load_error(config_dir, "staging")
    assert f"{config_dir / 'staging.yaml'}: key '{key}': " in message, message
    assert problem in message, message


def test_every_slice_the_evaluation_produces_is_a_valid_gate(config_dir: Path) -> None:
    slices = [{"slice": s, "min_macro_f1": 0.1}
              for s in ("kind=movie", "kind=tv", "ood", "ood:source=hulu")]
    _edit_yaml(config_dir / "staging.yaml", {"gates": {"bert": {"slices": slices}}})
    loaded = load_settings("staging", config_dir)
    assert [s.slice for s in loaded.gates.bert.slices] == [s["slice"] for s in slices]
