"""The features XGBoost sees besides the terms: linear genre scores and the chi-squared
term selection, fitted on the train split (see xgboost_model.py for why and how they are
stacked).

* `out_of_fold_scores`: per-genre L2 logistic regression (liblinear, dual) and optionally
  multinomial naive Bayes log-odds, out of fold for the train rows, fold-averaged for any
  other row. Both are linear scorers: (weights (genres, terms), bias).
* `select_features`: the k TF-IDF columns with the highest chi-squared score for any genre.
* `rare_genre_row_weights`: row weights that make titles of rare genres count more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

Linear = tuple[np.ndarray, np.ndarray]  # a linear genre scorer: weights (genres, terms), bias


def chi2_scores(x: sp.csr_matrix, y: np.ndarray) -> np.ndarray:
    """Chi-squared score of every column against every genre at once; shape (genres, columns).

    Same statistic as sklearn.feature_selection.chi2 on each binary label column, computed
    with one sparse product instead of one pass per genre. NaN (empty columns, constant
    labels) becomes 0.
    """
    y = np.asarray(y, dtype=np.float64)
    feature_sum = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    observed_pos = np.asarray(x.T @ y, dtype=np.float64).T  # sparse @ dense labels
    prior = y.mean(axis=0)[:, np.newaxis]
    expected_pos = prior * feature_sum
    expected_neg = (1.0 - prior) * feature_sum
    observed_neg = feature_sum - observed_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = ((observed_pos - expected_pos) ** 2 / expected_pos
                  + (observed_neg - expected_neg) ** 2 / expected_neg)
    return np.nan_to_num(scores, nan=0.0, posinf=0.0)


def select_features(x: sp.csr_matrix, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k columns with the highest chi-squared score for any genre (sorted)."""
    scores = chi2_scores(x, y).max(axis=0)
    k = min(k, x.shape[1])
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def fit_linear_scores(x: sp.csr_matrix, y: np.ndarray, C: float, seed: int = 0) -> Linear:
    """Balanced L2 logistic regression per genre (liblinear, dual); (coef (k, n), intercept)."""
    coefs = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    intercepts = np.zeros(y.shape[1], dtype=np.float32)
    for j in range(y.shape[1]):
        column = y[:, j]
        positives = int(column.sum())
        if positives in (0, len(column)):
            # A fold without any (or only) positives of a rare genre: a constant log-odds score.
            intercepts[j] = math.log((positives + 0.5) / (len(column) - positives + 0.5))
            continue
        clf = LogisticRegression(
            C=C, solver="liblinear", dual=True, class_weight="balanced", max_iter=1000,
            random_state=seed,
        ).fit(x, column)
        coefs[j], intercepts[j] = clf.coef_[0], clf.intercept_[0]
    return coefs, intercepts


NB_ALPHA = 0.1


def fit_nb_scores(x: sp.csr_matrix, y: np.ndarray, alpha: float = NB_ALPHA) -> Linear:
    """Multinomial naive Bayes per genre (genre vs rest) on the TF-IDF weights, as a linear
    score: (weights (k, n), intercept (k,)) with x @ weights.T + intercept = the log-odds
    sklearn's MultinomialNB(alpha) gives. One sparse product for all genres."""
    y = np.asarray(y, dtype=np.float64)
    n_features = x.shape[1]
    pos = np.asarray(x.T @ y, dtype=np.float64).T  # (k, n) term mass in each genre
    neg = np.maximum(np.asarray(x.sum(axis=0), dtype=np.float64).ravel() - pos, 0.0)
    log_pos = np.log(pos + alpha) - np.log(pos.sum(axis=1, keepdims=True) + alpha * n_features)
    log_neg = np.log(neg + alpha) - np.log(neg.sum(axis=1, keepdims=True) + alpha * n_features)
    positives = y.sum(axis=0)
    negatives = len(y) - positives
    prior = np.where((positives > 0) & (negatives > 0),
                     np.log(np.maximum(positives, 1)) - np.log(np.maximum(negatives, 1)),
                     np.log((positives + 0.5) / (negatives + 0.5)))
    return (log_pos - log_neg).astype(np.float32), prior.astype(np.float32)


@dataclass
class StackedScores:
    """Out-of-fold scores for the train rows and the fold-averaged models for other rows."""

    train_linear: np.ndarray
    linear: Linear
    train_nb: np.ndarray | None = None
    nb: Linear | None = None


def out_of_fold_scores(
    x: sp.csr_matrix, y: np.ndarray, folds: int, C: float, seed: int = 0, nb: bool = False,
    max_rows: int = 0,
) -> StackedScores:
    """Logistic (and naive Bayes) genre scores for each train row from models fitted on the
    other folds, and the average of those fold models for scoring any other row.

    max_rows > 0: each fold's logistic regressions use a seeded sample of at most that many
    of the fold's rows (naive Bayes always uses them all)."""
    train_linear = np.zeros(y.shape, dtype=np.float32)
    train_nb = np.zeros(y.shape, dtype=np.float32) if nb else None
    linear_models: list[Linear] = []
    nb_models: list[Linear] = []
    rng = np.random.default_rng(seed)
    for fit_rows, held_rows in KFold(folds, shuffle=True, random_state=seed).split(y):
        lr_rows = fit_rows
        if 0 < max_rows < len(fit_rows):
            lr_rows = np.sort(rng.choice(fit_rows, size=max_rows, replace=False))
        linear_models.append(fit_linear_scores(x[lr_rows], y[lr_rows], C, seed))
        train_linear[held_rows] = linear_scores(x[held_rows], linear_models[-1])
        if train_nb is not None:
            nb_models.append(fit_nb_scores(x[fit_rows], y[fit_rows]))
            train_nb[held_rows] = linear_scores(x[held_rows], nb_models[-1])
    return StackedScores(train_linear, _average(linear_models), train_nb,
                         _average(nb_models) if nb_models else None)


def _average(models: Sequence[Linear]) -> Linear:
    return (np.mean([m[0] for m in models], axis=0, dtype=np.float32),
            np.mean([m[1] for m in models], axis=0, dtype=np.float32))


def rare_genre_row_weights(y: np.ndarray, exponent: float) -> np.ndarray | None:
    """Row weights: the largest (n / (genres * positives_g)) ** exponent over the row's genres.

    Rows that carry a rare genre count more; rows without any genre keep weight 1. The
    weights are scaled to mean 1. exponent 0 -> None (no weighting)."""
    if exponent == 0:
        return None
    positives = np.maximum(y.sum(axis=0), 1)
    genre_weight = (len(y) / (y.shape[1] * positives)) ** exponent
    weights = np.where(y > 0, genre_weight, 0.0).max(axis=1)
    weights = np.where(weights > 0, weights, 1.0)
    return (weights / weights.mean()).astype(np.float32)


def linear_scores(x: sp.csr_matrix, linear: Linear) -> np.ndarray:
    """Each row's score per genre from a linear scorer: x @ weights.T + bias."""
    coef, intercept = linear
    return np.asarray(x @ coef.T + intercept, dtype=np.float32)
