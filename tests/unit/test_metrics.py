"""Tests for trending_assets.ml.metrics and trending_assets.ml.report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from trending_assets.ml.metrics import (
    apply_thresholds,
    choose_thresholds,
    multilabel_metrics,
)
from trending_assets.ml.report import EvaluationResult, evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENRES = ["drama", "comedy", "action"]

# Hand-checked example, columns drama / comedy / action.
#   drama : true rows {0,2,4}, predicted {0,2}   -> tp=2 fp=0 fn=1 -> P=1   R=2/3 F1=0.8
#   comedy: true rows {1,2},   predicted {1}     -> tp=1 fp=0 fn=1 -> P=1   R=1/2 F1=2/3
#   action: true rows {0,3},   predicted {1,3}   -> tp=1 fp=1 fn=1 -> P=1/2 R=1/2 F1=1/2
#   macro F1 = (0.8 + 2/3 + 0.5) / 3 = 59/90 ≈ 0.6556
#   micro: tp=4 fp=1 fn=3 -> P=4/5, R=4/7, F1 = 2*4 / (2*4 + 1 + 3) = 2/3
HAND_TRUE = np.array([
    [1, 0, 1],
    [0, 1, 0],
    [1, 1, 0],
    [0, 0, 1],
    [1, 0, 0],
])
HAND_PRED = np.array([
    [1, 0, 0],
    [0, 1, 1],
    [1, 0, 0],
    [0, 0, 1],
    [0, 0, 0],
])


def _synthetic(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and noisy, informative probabilities."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < np.linspace(0.15, 0.5, k)).astype(np.int8)
    p = np.clip(0.35 * y + rng.normal(0.3, 0.15, size=(n, k)), 0.0, 1.0)
    return y, p


def test_multilabel_metrics_matches_hand_computation_and_sklearn():
    m = multilabel_metrics(HAND_TRUE, HAND_PRED, GENRES)

    assert m["samples"] == 5
    assert m["macro_f1"] == pytest.approx(59 / 90)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    assert m["micro_precision"] == pytest.approx(4 / 5)
    assert m["micro_recall"] == pytest.approx(4 / 7)
    assert m["per_genre"]["drama"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert m["per_genre"]["comedy"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert m["per_genre"]["action"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["macro_f1"] == pytest.approx(f1_score(HAND_TRUE, HAND_PRED, average="macro"))
    assert m["micro_f1"] == pytest.approx(f1_score(HAND_TRUE, HAND_PRED, average="micro"))
    # Plain Python types, so it serialises as is.
    assert type(m["macro_f1"]) is float
    assert type(m["per_genre"]["drama"]["support"]) is int
    json.dumps(m)


def test_multilabel_metrics_single_genre_and_empty_rows():
    single = multilabel_metrics(HAND_TRUE[:, :1], HAND_PRED[:, :1], ["drama"])
    assert single["per_genre"]["drama"]["f1"] == pytest.approx(0.8)
    assert single["macro_f1"] == pytest.approx(0.8)
    assert single["micro_f1"] == pytest.approx(0.8)

    empty = multilabel_metrics(np.zeros((0, 3)), np.zeros((0, 3)), GENRES)
    assert empty["samples"] == 0
    assert empty["macro_f1"] == 0.0
    assert empty["per_genre"]["comedy"]["support"] == 0

    with pytest.raises(ValueError, match="genre names"):
        multilabel_metrics(HAND_TRUE, HAND_PRED, ["drama"])


def test_choose_thresholds_separates_low_scores_and_defaults_without_positives():
    y = np.array([
        [1, 0, 1],
        [1, 0, 0],
        [0, 0, 1],
        [0, 0, 0],
        [0, 0, 0],
    ])
    p = np.array([
        [0.30, 0.20, 0.90],
        [0.30, 0.70, 0.10],
        [0.10, 0.10, 0.90],
        [0.10, 0.40, 0.10],
        [0.10, 0.90, 0.10],
    ])
    thresholds = choose_thresholds(y, p)

    assert thresholds.shape == (3,)
    # Genre 0: 0.5 would predict nothing; every threshold in (0.1, 0.3] gives F1 = 1 and the
    # tie goes to the one nearest 0.5.
    assert 0.1 < thresholds[0] <= 0.3
    assert thresholds[0] == pytest.approx(0.30)
    assert np.array_equal(apply_thresholds(p, thresholds)[:, 0], y[:, 0])
    # Genre 1 has no positive at all.
    assert thresholds[1] == 0.5
    # Genre 2: F1 = 1 for any threshold in (0.1, 0.9]; nearest to 0.5 is 0.5 itself.
    assert thresholds[2] == pytest.approx(0.5)


def test_apply_thresholds_is_inclusive_int8():
    predicted = apply_thresholds(np.array([[0.3, 0.29, 0.9]]), np.array([0.3, 0.3, 0.95]))
    assert predicted.dtype == np.int8
    assert predicted.tolist() == [[1, 0, 0]]
    with pytest.raises(ValueError):
        apply_thresholds(np.zeros((2, 3)), np.array([0.5, 0.5]))


def test_evaluate_chooses_thresholds_on_validation_only():
    n = 40
    y_val = np.zeros((n, 2), dtype=np.int8)
    y_val[: n // 2] = 1
    p_val = np.where(y_val == 1, 0.3, 0.1)
    # Test disagrees with validation: its positives sit at 0.8, negatives at 0.6.
    y_test = y_val.copy()
    p_test = np.where(y_test == 1, 0.8, 0.6)

    result = evaluate("m", ["a", "b"], y_val, p_val, y_test, p_test, {})

    val_thresholds = choose_thresholds(y_val, p_val)
    assert list(result.thresholds.values()) == pytest.approx(val_thresholds.tolist())
    assert not np.allclose(val_thresholds, choose_thresholds(y_test, p_test))
    # Validation thresholds (0.3) on these test scores predict everything: precision 1/2.
    assert result.overall["micro_precision"] == pytest.approx(0.5)
    assert result.validation["macro_f1"] == pytest.approx(1.0)

    # Changing the test labels changes the test metrics but never the thresholds.
    all_positive = evaluate("m", ["a", "b"], y_val, p_val, np.ones_like(y_test), p_test, {})
    assert all_positive.thresholds == result.thresholds
    assert all_positive.overall["micro_precision"] == pytest.approx(1.0)


def test_slice_metrics_equal_metrics_on_masked_rows():
    genres = ["drama", "comedy", "action", "horror"]
    y_val, p_val = _synthetic(0, 120, 4)
    y_test, p_test = _synthetic(1, 150, 4)
    is_movie = np.random.default_rng(2).random(150) < 0.6
    slices = {"kind=movie": is_movie, "kind=tv": ~is_movie, "none": np.zeros(150, dtype=bool)}

    result = evaluate("m", genres, y_val, p_val, y_test, p_test, slices)

    thresholds = np.array([result.thresholds[g] for g in genres])
    for name, mask in slices.items():
        expected = multilabel_metrics(
            y_test[mask], apply_thresholds(p_test[mask], thresholds), genres
        )
        assert result.slices[name] == expected
        assert result.slices[name]["samples"] == int(mask.sum())
    assert result.overall == multilabel_metrics(
        y_test, apply_thresholds(p_test, thresholds), genres
    )

    with pytest.raises(ValueError, match="boolean mask"):
        evaluate("m", genres, y_val, p_val, y_test, p_test, {"bad": np.arange(150)})


def test_save_load_round_trip_report_and_plots(tmp_path):
    genres = ["drama", "comedy", "sci-fi", "documentary"]
    y_val, p_val = _synthetic(3, 100, 4)
    y_test, p_test = _synthetic(4, 120, 4)
    y_test[:, 3] = 0  # a genre absent from test: no PR curve, still reported
    kind = np.arange(120) % 2 == 0
    result = evaluate(
        "tfidf-logreg", genres, y_val, p_val, y_test, p_test,
        {"kind=movie": kind, "kind=tv": ~kind},
        baseline={"model_name": "majority", "macro_f1": 0.1, "micro_f1": 0.2},
    )

    result.save(tmp_path)
    loaded = EvaluationResult.load(tmp_path)

    assert loaded == result
    assert loaded.macro_f1 == result.macro_f1
    assert loaded.baseline == {"model_name": "majority", "macro_f1": 0.1, "micro_f1": 0.2}
    assert result.pr_curves["documentary"]["recall"] == []
    assert 2 <= len(result.pr_curves["drama"]["recall"]) <= 101

    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report == result.to_markdown()
    assert f"{result.macro_f1:.3f}" in report
    assert f"{result.macro_f1 - 0.1:+.3f}" in report
    assert "kind=movie" in report and "kind=tv" in report
    for genre in genres:
        assert genre in report
    # Per-genre rows are ordered by support, largest first.
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    genre_rows = [r.split("|")[1].strip() for r in rows if r.split("|")[1].strip() in genres]
    supports = [result.overall["per_genre"][g]["support"] for g in genre_rows]
    assert supports == sorted(supports, reverse=True)

    for name in EvaluationResult.plot_files:
        data = (tmp_path / name).read_bytes()
        assert len(data) > 0
        assert data.startswith(PNG_MAGIC)

    # Loading needs metrics.json only.
    (tmp_path / "report.md").unlink()
    for name in EvaluationResult.plot_files:
        (tmp_path / name).unlink()
    assert EvaluationResult.load(tmp_path) == result
