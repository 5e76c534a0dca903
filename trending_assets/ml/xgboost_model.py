"""TF-IDF + XGBoost multi-label genre model that is fast on sparse text.

Feature space, fitted on the train split only:

* linear genre scores: one L2 logistic regression per genre on the full TF-IDF, solved in the
  dual (liblinear's dual coordinate descent: same optimum, 14-80x faster than the primal per
  genre on the Netflix train split, where terms outnumber titles), and (`nb_scores`)
  multinomial naive Bayes log-odds per genre, a different view of the same terms that costs
  one sparse product. Train rows
  get out-of-fold scores (`linear_folds` folds) so the trees see scores as noisy as those of
  unseen titles; prediction uses the average of the fold models (a linear model, so the
  average is one weight matrix), which costs no extra fit and matches the scores' scale.
  Each fold's logistic regressions see at most `linear_max_rows` rows (a seeded sample): the
  iterative solver's cost stays bounded as data grows, while naive Bayes (one sparse
  product) and the trees use every row.
* the `k_best_features` TF-IDF columns with the highest chi-squared score for any genre, kept
  sparse: CSR goes straight into the (quantile) DMatrix and is never densified.

With `boost_from_linear` the booster starts from the linear scores (`base_margin`) and its
trees learn corrections: genre co-occurrence and term interactions the linear model misses.
One booster serves every genre (`multi_strategy`: one output per tree, or vector-leaf
multi-output trees, which were 4-10x slower here and no better), `hist` with a small
`max_bin`, early stopping on validation logloss.
Decision thresholds per genre are chosen on validation (stored with the model; the evaluation
asset chooses its own the same way).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import xgboost as xgb
from pydantic import Field, model_validator

from trending_assets.ml.config import StrictModel
from trending_assets.ml.metrics import apply_thresholds, choose_thresholds, multilabel_metrics
from trending_assets.ml.stacked_scores import (
    Linear,
    linear_scores,
    out_of_fold_scores,
    rare_genre_row_weights,
    select_features,
)
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures

BOOSTER_FILE = "booster.ubj"
LINEAR_FILE = "linear_scores.npz"
SELECTED_FILE = "selected_features.npy"
META_FILE = "xgboost_model.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class XGBoostParams(StrictModel):
    """The `xgboost:` section of configs/base.yaml (which holds the values); the module
    docstring says what each part does."""

    n_estimators: int = Field(ge=1, le=20_000)
    max_depth: int = Field(ge=1, le=32)
    learning_rate: float = Field(gt=0, le=1)
    max_bin: int = Field(ge=2, le=4096)
    k_best_features: int = Field(ge=10, le=2_000_000)
    early_stopping_rounds: int = Field(ge=1, le=10_000)
    min_child_weight: float = Field(ge=0, le=1e6)
    colsample_bytree: float = Field(gt=0, le=1)
    multi_strategy: Literal["one_output_per_tree", "multi_output_tree"]
    linear_folds: int = Field(
        ge=0, le=20, description="out-of-fold linear genre scores as features; 0 = none")
    linear_C: float = Field(gt=0, le=1e6)
    linear_max_rows: int = Field(
        ge=0, le=10_000_000, description="rows per fold for the logistic scorers; 0 = all rows")
    nb_scores: bool = Field(
        description="naive Bayes log-odds per genre as features (needs linear_folds >= 2)")
    boost_from_linear: bool = Field(
        description="trees start from the linear scores (needs linear_folds >= 2)")
    rare_genre_weight: float = Field(
        ge=0, le=1, description="row weight exponent for rare genres: 0 = off, 1 = inverse "
                                "genre frequency")
    n_jobs: int = Field(ge=0, le=512, description="0 = the CPU limit (affinity, cgroup quota)")
    device: str = Field(pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="cuda (or cuda:N) when a GPU is configured")
    seed: int = Field(ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _linear_folds_usable(self) -> XGBoostParams:
        if self.linear_folds == 1:
            raise ValueError("linear_folds must be 0 (no linear scores) or at least 2")
        if self.boost_from_linear and self.linear_folds == 0:
            raise ValueError("boost_from_linear needs linear scores (linear_folds >= 2)")
        if self.nb_scores and self.linear_folds == 0:
            raise ValueError("nb_scores needs out-of-fold scores (linear_folds >= 2)")
        return self

    def replace(self, **changes: Any) -> XGBoostParams:
        """A validated copy with `changes` (model_copy would skip validation)."""
        return XGBoostParams.model_validate({**self.model_dump(), **changes})


# --- resources --------------------------------------------------------------------------


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup CPU quota (a Kubernetes CPU limit), or None when unlimited."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: quota -1 = unlimited
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """Threads worth running: CPU affinity, capped by the cgroup quota (rounded up)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cuda_build() -> bool:
    """Whether this XGBoost build can train on a GPU (the `xgboost-cpu` wheel cannot)."""
    return bool(xgb.build_info().get("USE_CUDA", False))


# --- the model --------------------------------------------------------------------------


class XGBoostGenreModel:
    def __init__(
        self, encoder: TfidfEncoder, genres: list[str], selected: np.ndarray,
        booster: xgb.Booster, params: XGBoostParams,
        linear: Linear | None = None, nb: Linear | None = None,
        thresholds: np.ndarray | None = None, timings: Mapping[str, float] | None = None,
    ) -> None:
        self.encoder, self.genres, self.params = encoder, genres, params
        self.selected, self.booster, self.linear, self.nb = selected, booster, linear, nb
        self.thresholds = (np.full(len(genres), 0.5) if thresholds is None
                           else np.asarray(thresholds, dtype=float))
        self.timings = dict(timings or {})

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
        if y_val.shape != (x_val.shape[0], len(genres)):
            raise ValueError(
                f"validation labels have shape {y_val.shape}, "
                f"expected {(x_val.shape[0], len(genres))}"
            )
        if params.device != "cpu" and not cuda_build():
            raise ValueError(f"device={params.device!r} but this XGBoost build has no CUDA "
                             "support (install `xgboost` instead of `xgboost-cpu`)")
        x_train, x_val = sp.csr_matrix(x_train), sp.csr_matrix(x_val)
        y_train = np.asarray(y_train, dtype=np.float32)
        timings: dict[str, float] = {}

        start = time.perf_counter()
        linear = nb = None
        train_scores = train_nb = None
        if params.linear_folds:
            stacked = out_of_fold_scores(x_train, y_train, params.linear_folds,
                                         params.linear_C, params.seed, nb=params.nb_scores,
                                         max_rows=params.linear_max_rows)
            train_scores, linear = stacked.train_linear, stacked.linear
            train_nb, nb = stacked.train_nb, stacked.nb
        timings["linear_s"] = time.perf_counter() - start

        start = time.perf_counter()
        selected = select_features(x_train, y_train, params.k_best_features)
        f_train = _stack([train_scores, train_nb], x_train[:, selected])
        val_scores = None if linear is None else linear_scores(x_val, linear)
        val_nb = None if nb is None else linear_scores(x_val, nb)
        f_val = _stack([val_scores, val_nb], x_val[:, selected])
        timings["select_s"] = time.perf_counter() - start

        start = time.perf_counter()
        margin = params.boost_from_linear
        threads = resolve_threads(params.n_jobs)
        dtrain = xgb.QuantileDMatrix(
            f_train, label=y_train, base_margin=train_scores if margin else None,
            weight=rare_genre_row_weights(y_train, params.rare_genre_weight),
            max_bin=params.max_bin, nthread=threads,
        )
        dval = xgb.QuantileDMatrix(f_val, label=np.asarray(y_val, dtype=np.float32),
                                   base_margin=val_scores if margin else None, ref=dtrain,
                                   max_bin=params.max_bin, nthread=threads)
        # Train logloss only when someone reads it: each metric is an extra pass per round.
        evals = [(dtrain, "train"), (dval, "val")] if log_fn else [(dval, "val")]
        booster = xgb.train(
            booster_params(params), dtrain, num_boost_round=params.n_estimators, evals=evals,
            early_stopping_rounds=params.early_stopping_rounds, verbose_eval=False,
            callbacks=[_LogCallback(log_fn)] if log_fn else [],
        )
        timings["boost_s"] = time.perf_counter() - start

        start = time.perf_counter()
        model = cls(encoder, list(genres), selected, booster, params, linear, nb, None,
                    timings)
        model.thresholds = choose_thresholds(y_val, model._predict_matrix(x_val))
        model.timings["thresholds_s"] = time.perf_counter() - start
        return model

    @property
    def best_iteration(self) -> int:
        return int(self.booster.best_iteration)

    @classmethod
    def from_features(cls, features: TfidfFeatures, params: XGBoostParams,
                      log_fn: Callable[[dict[str, float]], None] | None = None) -> Self:
        """Trained on `features`, early-stopped on their validation rows (the family
        registry's entry point)."""
        f = features
        return cls.fit(f.encoder, f.genres, f.x_train, f.y_train, f.x_val, f.y_val, params,
                       log_fn=log_fn)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.genres)), dtype=np.float32)
        return self._predict_matrix(self.encoder.transform(texts))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """0/1 genres at the thresholds chosen on validation when the model was fitted."""
        return apply_thresholds(self.predict_proba(texts), self.thresholds)

    def _predict_matrix(self, x: sp.csr_matrix) -> np.ndarray:
        if x.shape[0] == 0:
            return np.zeros((0, len(self.genres)), dtype=np.float32)
        x = sp.csr_matrix(x)
        scores = None if self.linear is None else linear_scores(x, self.linear)
        bayes = None if self.nb is None else linear_scores(x, self.nb)
        matrix = xgb.DMatrix(
            _stack([scores, bayes], x[:, self.selected]),
            base_margin=scores if self.params.boost_from_linear else None,
            nthread=resolve_threads(self.params.n_jobs),
        )
        probs = self.booster.predict(matrix, iteration_range=(0, self.best_iteration + 1))
        return np.asarray(probs, dtype=np.float32).reshape(x.shape[0], len(self.genres))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.encoder.save(directory)
        self.booster.save_model(str(directory / BOOSTER_FILE))
        np.save(directory / SELECTED_FILE, self.selected)
        if self.linear is not None:
            arrays = {"coef": self.linear[0], "intercept": self.linear[1]}
            if self.nb is not None:
                arrays.update(nb_coef=self.nb[0], nb_intercept=self.nb[1])
            np.savez_compressed(directory / LINEAR_FILE, **arrays)
        (directory / META_FILE).write_text(json.dumps({
            "genres": self.genres, "params": self.params.model_dump(),
            "best_iteration": self.best_iteration,
            "thresholds": [float(t) for t in self.thresholds],
            "timings": self.timings,
        }))

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        booster = xgb.Booster()
        booster.load_model(str(directory / BOOSTER_FILE))
        booster.best_iteration = meta["best_iteration"]
        selected = np.load(directory / SELECTED_FILE, allow_pickle=False)
        linear = nb = None
        if (directory / LINEAR_FILE).exists():
            with np.load(directory / LINEAR_FILE, allow_pickle=False) as arrays:
                linear = (arrays["coef"], arrays["intercept"])
                if "nb_coef" in arrays.files:
                    nb = (arrays["nb_coef"], arrays["nb_intercept"])
        params = XGBoostParams.model_validate(meta["params"])
        if (linear is None and params.linear_folds) or (nb is None and params.nb_scores):
            raise ValueError(f"{directory}: params use linear scores but {LINEAR_FILE} is "
                             "missing or incomplete")
        return cls(TfidfEncoder.load(directory), meta["genres"], selected, booster, params,
                   linear, nb, meta.get("thresholds"), meta.get("timings"))


def resolve_threads(n_jobs: int) -> int:
    return n_jobs or usable_cores()


def booster_params(params: XGBoostParams) -> dict[str, Any]:
    return {
        "objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
        "multi_strategy": params.multi_strategy, "max_depth": params.max_depth,
        "eta": params.learning_rate, "max_bin": params.max_bin,
        "min_child_weight": params.min_child_weight,
        "colsample_bytree": params.colsample_bytree,
        "nthread": resolve_threads(params.n_jobs), "device": params.device,
        "seed": params.seed,
    }


def _stack(scores: Sequence[np.ndarray | None], terms: sp.csr_matrix) -> sp.csr_matrix:
    """[score blocks... | selected terms] as one CSR matrix (scores are dense columns)."""
    blocks = [sp.csr_matrix(s) for s in scores if s is not None]
    if not blocks:
        return sp.csr_matrix(terms, dtype=np.float32)
    return sp.hstack([*blocks, terms], format="csr", dtype=np.float32)


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


# --- hyperparameter search --------------------------------------------------------------

# A small grid around the shipped defaults: each trial takes seconds on two cores.
DEFAULT_SEARCH_GRID: dict[str, list[Any]] = {
    "learning_rate": [0.1, 0.2],
    "max_depth": [3, 4],
    "k_best_features": [300, 1000],
}


def grid_trials(base: XGBoostParams, grid: Mapping[str, Iterable[Any]]) -> list[XGBoostParams]:
    """Every combination of the grid's values applied to `base` (in grid order)."""
    trials = [base]
    for name, values in grid.items():
        if name not in XGBoostParams.model_fields:
            raise ValueError(f"unknown XGBoost parameter in the search grid: {name}")
        trials = [t.replace(**{name: v}) for t in trials for v in values]
    return trials


def search_hyperparameters(
    encoder: TfidfEncoder, genres: Sequence[str],
    x_train: sp.csr_matrix, y_train: np.ndarray, x_val: sp.csr_matrix, y_val: np.ndarray,
    base: XGBoostParams, grid: Mapping[str, Iterable[Any]],
    log_fn: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fit one model per grid point; rank by validation macro-F1 (thresholds tuned there).

    The test split is never used. Returns {"best": params dict, "best_trial": index,
    "trials": [{"params", "val_macro_f1", "val_micro_f1", "best_iteration", "fit_s"}]}.
    """
    trials: list[dict[str, Any]] = []
    for index, params in enumerate(grid_trials(base, grid)):
        start = time.perf_counter()
        model = XGBoostGenreModel.fit(encoder, genres, x_train, y_train, x_val, y_val, params)
        fit_s = time.perf_counter() - start
        probs = model._predict_matrix(x_val)
        val = multilabel_metrics(y_val, apply_thresholds(probs, choose_thresholds(y_val, probs)),
                                 list(genres))
        trial = {"params": params.model_dump(), "val_macro_f1": val["macro_f1"],
                 "val_micro_f1": val["micro_f1"], "best_iteration": model.best_iteration,
                 "fit_s": fit_s}
        trials.append(trial)
        if log_fn:
            log_fn({"trial": index, **{f"params/{k}": v for k, v in grid_point(params, grid)},
                    "val/macro_f1": val["macro_f1"], "val/micro_f1": val["micro_f1"],
                    "best_iteration": model.best_iteration, "fit_s": fit_s})
    best = max(range(len(trials)), key=lambda i: (trials[i]["val_macro_f1"], -i))
    return {"best": trials[best]["params"], "best_trial": best, "trials": trials}


def grid_point(params: XGBoostParams, grid: Mapping[str, Iterable[Any]]) -> list[tuple[str, Any]]:
    return [(name, getattr(params, name)) for name in grid]
