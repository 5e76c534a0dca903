"""Reference model: TF-IDF + one-vs-rest logistic regression, stored as plain arrays."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from trending_assets.ml.config import StrictModel
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures

WEIGHTS_FILE = "linear_weights.npz"


class LinearParams(StrictModel):
    """The reference model: the `reference:` section of configs/base.yaml."""

    C: float = Field(gt=0, le=1e6)
    max_iter: int = Field(ge=10, le=100_000)
    balanced: bool


class LinearGenreModel:
    """One logistic regression per genre; predict_proba is sigmoid(X @ coef.T + intercept)."""

    def __init__(
        self, encoder: TfidfEncoder, genres: list[str], coef: np.ndarray, intercept: np.ndarray,
        params: LinearParams,
    ) -> None:
        self.encoder, self.genres, self.params = encoder, genres, params
        self.coef, self.intercept = coef, intercept

    @classmethod
    def fit(
        cls, encoder: TfidfEncoder, genres: Sequence[str], x: sp.csr_matrix, y: np.ndarray,
        params: LinearParams,
    ) -> Self:
        if y.shape != (x.shape[0], len(genres)):
            raise ValueError(f"labels have shape {y.shape}, expected {(x.shape[0], len(genres))}")
        coefs, intercepts = [], []
        for j, genre in enumerate(genres):
            if y[:, j].min() == y[:, j].max():
                raise ValueError(f"genre {genre!r} has only one class in the training data")
            clf = LogisticRegression(
                C=params.C, max_iter=params.max_iter, solver="liblinear",
                class_weight="balanced" if params.balanced else None,
            ).fit(x, y[:, j])
            coefs.append(clf.coef_[0])
            intercepts.append(clf.intercept_[0])
        return cls(encoder, list(genres), np.vstack(coefs).astype(np.float32),
                   np.asarray(intercepts, dtype=np.float32), params)

    @classmethod
    def from_features(cls, features: TfidfFeatures, params: LinearParams,
                      log_fn: Callable[[dict[str, float]], None] | None = None) -> Self:
        """Trained on the train rows of `features` (the family registry's entry point)."""
        f = features
        return cls.fit(f.encoder, f.genres, f.x_train, f.y_train, params)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        x = self.encoder.transform(texts)
        return expit(np.asarray(x @ self.coef.T) + self.intercept).astype(np.float32)

    def save(self, directory: Path) -> None:
        self.encoder.save(directory)
        np.savez_compressed(directory / WEIGHTS_FILE, coef=self.coef, intercept=self.intercept)
        (directory / "linear_model.json").write_text(
            json.dumps({"genres": self.genres, "params": self.params.model_dump()})
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = json.loads((directory / "linear_model.json").read_text())
        weights = np.load(directory / WEIGHTS_FILE, allow_pickle=False)
        return cls(TfidfEncoder.load(directory), meta["genres"], weights["coef"],
                   weights["intercept"], LinearParams(**meta["params"]))
