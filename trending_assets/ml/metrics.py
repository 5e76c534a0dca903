"""Multi-label metrics: per-genre decision thresholds and JSON-able precision/recall/F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

THRESHOLD_GRID: np.ndarray = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05, 0.10, ..., 0.95
DEFAULT_THRESHOLD = 0.5


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, genres), got shape {array.shape}")
    return array


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} shapes differ: {a.shape} vs {b.shape}")


def _sklearn_inputs(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    # A single column is read by sklearn as a binary target (classes 0 and 1), not as one
    # label; flattening it and naming label 1 gives the per-genre numbers we want.
    if y_true.shape[1] == 1:
        return {"y_true": y_true.ravel(), "y_pred": y_pred.ravel(), "labels": [1]}
    return {"y_true": y_true, "y_pred": y_pred}


def choose_thresholds(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Per-genre decision threshold maximising F1 on (validation) data; shape (k,).

    Candidates: a fixed grid 0.05..0.95 step 0.05. Ties -> the candidate closest to 0.5.
    A genre with no positive in y_true gets 0.5.
    """
    y_true = _as_matrix(y_true, "y_true").astype(np.int8)
    y_prob = _as_matrix(y_prob, "y_prob")
    _check_same_shape(y_true, y_prob, "y_true / y_prob")
    k = y_true.shape[1]
    if y_true.shape[0] == 0:
        return np.full(k, DEFAULT_THRESHOLD)

    # scores[c, j]: F1 of genre j when thresholded at candidate c.
    scores = np.stack([
        np.atleast_1d(f1_score(
            **_sklearn_inputs(y_true, (y_prob >= t).astype(np.int8)),
            average=None, zero_division=0,
        ))
        for t in THRESHOLD_GRID
    ])
    distance = np.abs(THRESHOLD_GRID - DEFAULT_THRESHOLD)
    thresholds = np.full(k, DEFAULT_THRESHOLD)
    for j in np.flatnonzero(y_true.sum(axis=0) > 0):
        column = scores[:, j]
        # Tolerance so F1 values equal up to float noise count as ties.
        best = np.flatnonzero(column >= column.max() - 1e-12)
        # Order by distance to 0.5, then by the lower threshold, so the choice is deterministic.
        winner = min(best, key=lambda c: (distance[c], THRESHOLD_GRID[c]))
        thresholds[j] = THRESHOLD_GRID[winner]
    return thresholds


def apply_thresholds(y_prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 predictions (int8): genre j is predicted when its probability >= thresholds[j]."""
    y_prob = _as_matrix(y_prob, "y_prob")
    thresholds = np.asarray(thresholds, dtype=float).ravel()
    if thresholds.shape[0] != y_prob.shape[1]:
        raise ValueError(
            f"{thresholds.shape[0]} thresholds for {y_prob.shape[1]} genre columns"
        )
    return (y_prob >= thresholds[np.newaxis, :]).astype(np.int8)


def multilabel_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, genres: Sequence[str]
) -> dict[str, Any]:
    """Micro/macro F1, micro precision/recall, row count and per-genre scores (zero_division=0).

    Returns {"micro_f1", "macro_f1", "micro_precision", "micro_recall", "samples",
    "per_genre": {genre: {"precision", "recall", "f1", "support"}}} as plain floats/ints.
    A genre with no positive and no prediction scores 0 and still counts in macro F1.
    """
    y_true = _as_matrix(y_true, "y_true").astype(np.int8)
    y_pred = _as_matrix(y_pred, "y_pred").astype(np.int8)
    _check_same_shape(y_true, y_pred, "y_true / y_pred")
    genres = list(genres)
    if len(genres) != y_true.shape[1]:
        raise ValueError(f"{len(genres)} genre names for {y_true.shape[1]} columns")

    n = int(y_true.shape[0])
    if n == 0:
        # sklearn refuses empty input; an empty slice is reported as all zeros.
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {
            "micro_f1": 0.0, "macro_f1": 0.0, "micro_precision": 0.0, "micro_recall": 0.0,
            "samples": 0, "per_genre": {g: dict(zero) for g in genres},
        }

    inputs = _sklearn_inputs(y_true, y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        **inputs, average=None, zero_division=0
    )
    micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(
        **inputs, average="micro", zero_division=0
    )
    macro_f1 = f1_score(**inputs, average="macro", zero_division=0)
    return {
        "micro_f1": float(micro_f1),
        "macro_f1": float(macro_f1),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "samples": n,
        "per_genre": {
            genre: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(support[j]),
            }
            for j, genre in enumerate(genres)
        },
    }
