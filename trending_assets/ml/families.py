"""The model families, in one ordered registry (plain Python, no Dagster).

Everything that lists families derives from `FAMILIES`: the training, evaluation and
registration assets, the retrain-request schema (family names, hyperparameter sections),
the CLI's summary, the gates and reproduction tolerances in the settings, and
`reproduce.retrain`. Adding a family touches its own module (model class with
from_features or from_splits, predict_proba, save, load; a parameter schema), its
sections in configs/base.yaml (parameters, gate) and one line here.

Model classes are named by import path and loaded on first use, so reading the registry
(settings do, at load time) does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal

from pydantic import BaseModel

from trending_assets.ml.bert.params import BertParams
from trending_assets.ml.linear import LinearParams
from trending_assets.ml.xgboost_model import XGBoostParams

# log_fn receives training metrics (step losses, validation scores) as they come.
LogFn = Callable[[dict[str, float]], None] | None
Input = Literal["tfidf", "text"]


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    `input` is what the model class trains on: "tfidf" = the fitted `TfidfFeatures`
    (encoder, train/validation matrices and labels) through
    `<model>.from_features(features, params, log_fn)`, "text" = the `TitleSplits` (texts
    and labels; the family tokenizes) through `<model>.from_splits(splits, params, log_fn)`.
    `model` names the class as "module:Class"; `load(folder)` reads a saved model and
    `predict_proba(texts)` scores, the same for every family.
    """

    name: str
    params_type: type[BaseModel]
    section: str  # the configs/ section holding the parameters
    input: Input
    model: str  # "module:Class"
    reproduce_tolerance: float  # largest |recorded - retrained| test metric by default
    code_version: str  # bump when what training computes changes (the retrain decision)
    kinds: tuple[str, ...]
    description: str
    registered: bool = True  # False: evaluated as every report's baseline, never registered

    @property
    def model_type(self) -> type:
        module, _, name = self.model.partition(":")
        return getattr(import_module(module), name)

    def fit(self, inputs: Any, params: BaseModel, log_fn: LogFn = None) -> Any:
        """A trained model: `inputs` are TfidfFeatures or TitleSplits (see `input`)."""
        train = (self.model_type.from_features if self.input == "tfidf"
                 else self.model_type.from_splits)
        return train(inputs, params, log_fn)


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily(
        "reference", LinearParams, "reference", "tfidf", "trending_assets.ml.linear:"
        "LinearGenreModel", 0.0, "1", ("scikitlearn", "wandb"),
        "TF-IDF + one-vs-rest logistic regression: the simplest model that works.",
        registered=False),
    ModelFamily(
        "xgboost", XGBoostParams, "xgboost", "tfidf", "trending_assets.ml.xgboost_model:"
        "XGBoostGenreModel", 0.0, "1", ("xgboost", "wandb"),
        "XGBoost boosted from out-of-fold linear genre scores, on those scores + "
        "chi-squared-selected TF-IDF terms (sparse), early-stopped on validation. Parameters: "
        "settings `xgboost` (the optional xgboost_hyperparameters asset suggests an overlay)."),
    ModelFamily(
        "bert", BertParams, "bert", "text", "trending_assets.ml.bert.model:BertGenreModel",
        0.02, "2", ("pytorch", "huggingface", "wandb"),
        "BERT-family transformer (bundled MiniLM by default) fine-tuned for multi-label "
        "genres."),
)}


def family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: use {', '.join(FAMILIES)}")
    return FAMILIES[name]


def registry_model_name(name: str) -> str:
    """The family's model name in the registry (and in W&B)."""
    return f"trending-now-{name}"


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def registered_names() -> tuple[str, ...]:
    """The families whose models are registered (every one but the baseline)."""
    return tuple(f.name for f in FAMILIES.values() if f.registered)


def baseline() -> str:
    """The family every other evaluation is compared against (the unregistered one)."""
    return next(f.name for f in FAMILIES.values() if not f.registered)


def sections() -> tuple[str, ...]:
    """Hyperparameter sections: TF-IDF (when a family reads its features), then each
    family's, in registry order and without repeats."""
    tfidf = ("tfidf",) if any(f.input == "tfidf" for f in FAMILIES.values()) else ()
    return tuple(dict.fromkeys((*tfidf, *(f.section for f in FAMILIES.values()))))


@contextmanager
def extra_family(new: ModelFamily) -> Iterator[ModelFamily]:
    """`new` registered (last) for the duration; for tests and experiments."""
    if new.name in FAMILIES:
        raise ValueError(f"model family {new.name!r} is registered already")
    FAMILIES[new.name] = new
    try:
        yield new
    finally:
        del FAMILIES[new.name]
