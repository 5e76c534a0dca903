"""TF-IDF + XGBoost multi-label model on a chi-squared-selected sparse feature space."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
import xgboost as xgb
from sklearn.feature_selection import chi2

from trending_assets.ml.tfidf import TfidfEncoder

BOOSTER_FILE = "booster.ubj"


@dataclass(frozen=True)
class XGBoostParams:
    n_estimators: int = 400
    max_depth: int = 6
    learning_rate: float = 0.1
    max_bin: int = 64
    k_best_features: int = 4000
    early_stopping_rounds: int = 30
    n_jobs: int = 0  # 0 = every core this process may use


def select_features(x: sp.csr_matrix, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k columns with the highest chi-squared score for any genre (sorted)."""
    scores = np.zeros(x.shape[1])
    for j in range(y.shape[1]):
        s, _ = chi2(x, y[:, j])
        scores = np.maximum(scores, np.nan_to_num(s))
    k = min(k, x.shape[1])
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class XGBoostGenreModel:
    def __init__(
        self, encoder: TfidfEncoder, genres: list[str], selected: np.ndarray,
        booster: xgb.Booster, params: XGBoostParams,
    ) -> None:
        self.encoder, self.genres, self.params = encoder, genres, params
        self.selected, self.booster = selected, booster

    @classmethod
    def fit(
        cls, encoder: TfidfEncoder, genres: Sequence[str],
        x_train: sp.csr_matrix, y_train: np.ndarray, x_val: sp.csr_matrix, y_val: np.ndarray,
        params: XGBoostParams, log_fn: Callable[[dict[str, float]], None] | None = None,
    ) -> Self:
        if y_train.shape != (x_train.shape[0], len(genres)):
            raise ValueError(
                f"labels have shape {y_train.shape}, expected {(x_train.shape[0], len(genres))}"
            )
        selected = select_features(x_train, y_train, params.k_best_features)
        # Sparse CSR straight into the DMatrix: densifying 8k x 50k floats wastes time and memory.
        dtrain = xgb.DMatrix(x_train[:, selected], label=y_train)
        dval = xgb.DMatrix(x_val[:, selected], label=y_val)
        booster_params = {
            "objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
            "max_depth": params.max_depth, "eta": params.learning_rate,
            "max_bin": params.max_bin, "nthread": params.n_jobs or usable_cores(),
            "multi_strategy": "one_output_per_tree", "seed": 0,
        }
        callbacks = [_LogCallback(log_fn)] if log_fn else []
        booster = xgb.train(
            booster_params, dtrain, num_boost_round=params.n_estimators,
            evals=[(dtrain, "train"), (dval, "val")],
            early_stopping_rounds=params.early_stopping_rounds, verbose_eval=False,
            callbacks=callbacks,
        )
        return cls(encoder, list(genres), selected, booster, params)

    @property
    def best_iteration(self) -> int:
        return int(self.booster.best_iteration)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        x = self.encoder.transform(texts)[:, self.selected]
        probs = self.booster.predict(
            xgb.DMatrix(x), iteration_range=(0, self.best_iteration + 1)
        )
        return np.asarray(probs, dtype=np.float32).reshape(len(texts), len(self.genres))

    def save(self, directory: Path) -> None:
        self.encoder.save(directory)
        self.booster.save_model(str(directory / BOOSTER_FILE))
        np.save(directory / "selected_features.npy", self.selected)
        (directory / "xgboost_model.json").write_text(json.dumps({
            "genres": self.genres, "params": asdict(self.params),
            "best_iteration": self.best_iteration,
        }))

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = json.loads((directory / "xgboost_model.json").read_text())
        booster = xgb.Booster()
        booster.load_model(str(directory / BOOSTER_FILE))
        booster.best_iteration = meta["best_iteration"]
        selected = np.load(directory / "selected_features.npy", allow_pickle=False)
        return cls(TfidfEncoder.load(directory), meta["genres"], selected, booster,
                   XGBoostParams(**meta["params"]))


class _LogCallback(xgb.callback.TrainingCallback):
    def __init__(self, log_fn: Callable[[dict[str, float]], None], every: int = 10) -> None:
        self.log_fn, self.every = log_fn, every

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        if epoch % self.every == 0:
            self.log_fn({
                "round": epoch,
                "train/logloss": float(evals_log["train"]["logloss"][-1]),
                "val/logloss": float(evals_log["val"]["logloss"][-1]),
            })
        return False
