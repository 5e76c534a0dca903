"""Each parameter key has exactly one default: its value in configs/base.yaml.

The parameter schemas (ml/) declare every field without a default and `Settings` composes
them without one, so base.yaml is the only place a value comes from; the environment
overlays change it per environment, and the stand-alone trainers read the same files.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from trending_assets.ml.bert.params import BertParams, LoopSettings
from trending_assets.ml.config import section_params
from trending_assets.ml.limits import LandingLimits
from trending_assets.settings import REPO_ROOT, DataSettings, Settings, load_settings

BASE = REPO_ROOT / "configs" / "base.yaml"
# (where in Settings, the model that declares it)
SECTIONS = {
    ("bert",): Settings,
    ("xgboost",): Settings,
    ("tfidf",): Settings,
    ("reference",): Settings,
    ("data", "landing_limits"): DataSettings,
}


def _section_model(path: tuple[str, ...]) -> tuple[type[BaseModel], Any]:
    """The model declared at `path` and the field that holds it in its parent."""
    field = SECTIONS[path].model_fields[path[-1]]
    return field.annotation, field


def _base_values(path: tuple[str, ...]) -> dict[str, Any]:
    node: Any = yaml.safe_load(BASE.read_text())
    for part in path:
        node = node[part]
    return node


def default_table(path: tuple[str, ...]) -> dict[str, list[str]]:
    """key -> every place that gives it a value when no overlay does."""
    model, holder = _section_model(path)
    in_base = _base_values(path)
    table: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        sources = []
        if not field.is_required():
            sources.append(f"{model.__module__}.{model.__name__}")
        if name in in_base:
            sources.append("configs/base.yaml")
        table[name] = sources
    if not holder.is_required():  # a default instance of the whole section is a copy too
        table["<section>"] = [f"{SECTIONS[path].__name__}.{path[-1]} default"]
    return table


@pytest.mark.parametrize("path", sorted(SECTIONS), ids=".".join)
def test_every_key_has_one_default_in_base_yaml(path: tuple[str, ...]) -> None:
    table = default_table(path)
    assert table, path
    assert {key: sources for key, sources in table.items()
            if sources != ["configs/base.yaml"]} == {}
    # ...and base.yaml sets nothing the schema does not declare.
    model, _ = _section_model(path)
    assert set(_base_values(path)) == set(model.model_fields)


def test_the_default_table_for_bert_and_xgboost() -> None:
    bert, xgboost = default_table(("bert",)), default_table(("xgboost",))
    assert bert == {key: ["configs/base.yaml"] for key in (
        "epochs", "batch_size", "learning_rate", "seed", "grad_accum_steps", "weight_decay",
        "warmup_ratio", "max_grad_norm", "pad_multiple", "compile", "early_stopping_patience",
        "checkpoint_every_steps", "log_every_steps", "precision", "model_path", "max_length",
        "head_dropout", "threads", "processes")}
    assert xgboost == {key: ["configs/base.yaml"] for key in (
        "n_estimators", "max_depth", "learning_rate", "max_bin", "k_best_features",
        "early_stopping_rounds", "min_child_weight", "colsample_bytree", "multi_strategy",
        "linear_folds", "linear_C", "linear_max_rows", "nb_scores", "boost_from_linear",
        "rare_genre_weight", "n_jobs", "device", "seed")}


def test_the_values_the_issue_found_disagreeing_are_base_yaml_s() -> None:
    # Before, BertSettings said 2 epochs, lr 1e-4, warm-up 0.1, no step checkpoints.
    bert = load_settings("local").bert
    assert (bert.epochs, bert.learning_rate, bert.warmup_ratio,
            bert.checkpoint_every_steps) == (4, 2e-4, 0.06, 100)
    assert section_params(BertParams, "bert") == bert  # the trainers read the same value


def test_settings_compose_the_trainers_schemas() -> None:
    settings = load_settings("local")
    assert type(settings.bert) is BertParams and isinstance(settings.bert, LoopSettings)
    assert type(settings.data.landing_limits) is LandingLimits
    # batch_size keeps one type from the YAML to the loop.
    assert type(settings.bert.batch_size) is int
    assert BertParams.model_fields["batch_size"].annotation is int
    assert LoopSettings.model_fields["batch_size"].annotation is int


def test_a_key_missing_from_base_yaml_is_an_error_not_a_fallback(tmp_path) -> None:
    for name in ("base.yaml", "local.yaml", "genres.yaml"):
        (tmp_path / name).write_text((REPO_ROOT / "configs" / name).read_text())
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    del base["xgboost"]["max_depth"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(ValueError, match=r"xgboost\.max_depth': Field required"):
        load_settings("local", tmp_path)
