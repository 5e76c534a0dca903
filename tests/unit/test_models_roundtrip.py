"""TF-IDF, linear and XGBoost models on real Netflix rows: fit, save, load, no pickle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from tests.helpers import REPO as REPO_ROOT
from trending_assets.ml.config import section_params
from trending_assets.ml.dataset import assign_splits, build_training_table, label_matrix
from trending_assets.ml.linear import LinearGenreModel, LinearParams
from trending_assets.ml.stacked_scores import select_features
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures, TfidfParams
from trending_assets.ml.xgboost_model import XGBoostGenreModel, XGBoostParams

NETFLIX = REPO_ROOT / "trending_assets" / "data" / "netflix_titles_genres.csv.gz"
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}
TFIDF = TfidfParams(ngram_max=2, min_df=2, max_features=50_000, sublinear_tf=True)
LINEAR = LinearParams(C=4.0, max_iter=1000, balanced=True)
XGB = section_params(XGBoostParams, "xgboost", n_estimators=20, max_depth=4, learning_rate=0.3,
                     max_bin=32, k_best_features=500, early_stopping_rounds=30, n_jobs=1)


@dataclass
class Data:
    genres: list[str]
    train_texts: list[str]
    test_texts: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    encoder: TfidfEncoder
    x_train: sp.csr_matrix
    x_val: sp.csr_matrix


@pytest.fixture(scope="module")
def data() -> Data:
    taxonomy = Taxonomy.from_config(yaml.safe_load((REPO_ROOT / "configs/genres.yaml").read_text()))
    raw = pd.read_csv(NETFLIX, keep_default_na=False).head(1500)
    table, genres, _ = build_training_table([raw], taxonomy)
    table = assign_splits(table, 0.1, 0.1, "trending-now-split-v1")
    part = {s: table[table["split"] == s] for s in ("train", "val", "test")}
    assert len(part["train"]) > 1000 and len(part["val"]) > 100 and len(part["test"]) > 100
    encoder = TfidfEncoder.fit(part["train"]["description"].tolist(), TFIDF)
    y_train = label_matrix(part["train"]["labels"], genres)
    y_val = label_matrix(part["val"]["labels"], genres)
    return Data(
        genres=genres,
        train_texts=part["train"]["description"].tolist(),
        test_texts=part["test"]["description"].tolist(),
        y_train=y_train, y_val=y_val, encoder=encoder,
        x_train=encoder.transform(part["train"]["description"].tolist()),
        x_val=encoder.transform(part["val"]["description"].tolist()),
    )


@pytest.fixture(scope="module")
def linear(data: Data) -> LinearGenreModel:
    return LinearGenreModel.fit(data.encoder, data.genres, data.x_train, data.y_train, LINEAR)


@pytest.fixture(scope="module")
def xgb_logs() -> list[dict[str, float]]:
    return []


@pytest.fixture(scope="module")
def xgboost(data: Data, xgb_logs: list[dict[str, float]]) -> XGBoostGenreModel:
    return XGBoostGenreModel.fit(
        data.encoder, data.genres, data.x_train, data.y_train, data.x_val, data.y_val, XGB,
        log_fn=xgb_logs.append,
    )


def assert_no_pickle(folder: Path) -> int:
    """No pickle-format files, and every numpy file loads with allow_pickle=False."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, f"{folder} is empty"
    assert [p.name for p in files if p.suffix in PICKLE_SUFFIXES] == []
    arrays = 0
    for path in files:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                for name in archive.files:
                    assert archive[name].dtype != object
                    arrays += 1
        elif path.suffix == ".npy":
            assert np.load(path, allow_pickle=False).dtype != object
            arrays += 1
        elif path.suffix == ".json":
            json.loads(path.read_text())
        # a pickle stream starts with the PROTO opcode 0x80
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    return arrays


# --- TF-IDF -----------------------------------------------------------------------------


def test_data_is_real_multilabel(data: Data) -> None:
    assert "Drama" in data.genres and "Documentary" in data.genres
    assert data.y_train.shape == (len(data.train_texts), len(data.genres))
    assert (data.y_train.sum(axis=1) >= 1).all()
    assert (data.y_train.sum(axis=1) >= 2).any()  # multi-label rows exist
    assert (data.y_train.sum(axis=0) > 0).all()


def test_encoder_matches_sklearn(data: Data) -> None:
    reference = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=50_000,
                                sublinear_tf=True, dtype=np.float32).fit(data.train_texts)
    assert data.encoder.n_features == len(reference.vocabulary_)
    assert data.encoder.n_features > 1000
    for texts in (data.train_texts, data.test_texts):
        ours = data.encoder.transform(texts)
        assert isinstance(ours, sp.csr_matrix)
        np.testing.assert_allclose(ours.toarray(), reference.transform(texts).toarray(),
                                   rtol=1e-6, atol=1e-7)


def test_encoder_roundtrip(data: Data, tmp_path: Path) -> None:
    data.encoder.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tfidf_encoder.json"]
    loaded = TfidfEncoder.load(tmp_path)
    assert loaded.params == TFIDF
    assert loaded.n_features == data.encoder.n_features
    before = data.encoder.transform(data.test_texts)
    after = loaded.transform(data.test_texts)
    assert before.nnz == after.nnz > 0
    np.testing.assert_allclose(after.toarray(), before.toarray(), rtol=1e-6)
    assert_no_pickle(tmp_path)


def test_tfidf_features_roundtrip(data: Data, tmp_path: Path) -> None:
    features = TfidfFeatures(data.encoder, data.genres, data.x_train, data.y_train,
                             data.x_val, data.y_val)
    features.save(tmp_path)
    assert assert_no_pickle(tmp_path) >= 2
    loaded = TfidfFeatures.load(tmp_path)
    assert loaded.genres == data.genres
    assert (loaded.x_train != data.x_train).nnz == 0
    assert (loaded.x_val != data.x_val).nnz == 0
    np.testing.assert_array_equal(loaded.y_train, data.y_train)
    np.testing.assert_array_equal(loaded.y_val, data.y_val)


# --- linear -----------------------------------------------------------------------------


def test_linear_roundtrip_and_no_pickle(linear: LinearGenreModel, data: Data,
                                        tmp_path: Path) -> None:
    before = linear.predict_proba(data.test_texts)
    assert before.shape == (len(data.test_texts), len(data.genres))
    assert before.dtype == np.float32
    assert ((before > 0) & (before < 1)).all()
    linear.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "linear_model.json", "linear_weights.npz", "tfidf_encoder.json"]
    assert assert_no_pickle(tmp_path) == 2  # coef + intercept
    loaded = LinearGenreModel.load(tmp_path)
    assert loaded.genres == data.genres
    assert loaded.params == LINEAR
    np.testing.assert_array_equal(loaded.coef, linear.coef)
    np.testing.assert_allclose(loaded.predict_proba(data.test_texts), before, rtol=1e-6)


def test_linear_matches_sklearn_logistic_regression(linear: LinearGenreModel,
                                                    data: Data) -> None:
    x_test = data.encoder.transform(data.test_texts)
    ours = linear.predict_proba(data.test_texts)
    for genre in ("Drama", "Documentary"):
        j = data.genres.index(genre)
        clf = LogisticRegression(C=4.0, max_iter=1000, solver="liblinear",
                                 class_weight="balanced").fit(data.x_train, data.y_train[:, j])
        expected = clf.predict_proba(x_test)[:, 1]
        np.testing.assert_allclose(ours[:, j], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(linear.coef[j], clf.coef_[0], rtol=1e-5, atol=1e-6)


def test_linear_learns_something(linear: LinearGenreModel, data: Data) -> None:
    probs = linear.predict_proba(data.train_texts)
    for j in range(len(data.genres)):
        pos = probs[data.y_train[:, j] == 1, j].mean()
        neg = probs[data.y_train[:, j] == 0, j].mean()
        assert pos > neg + 0.2, data.genres[j]


def test_linear_shape_errors(data: Data) -> None:
    with pytest.raises(ValueError, match="labels have shape"):
        LinearGenreModel.fit(data.encoder, data.genres, data.x_train, data.y_train[:, :-1],
                             LINEAR)
    with pytest.raises(ValueError, match="labels have shape"):
        LinearGenreModel.fit(data.encoder, data.genres, data.x_train, data.y_train[:-1], LINEAR)
    y = data.y_train.copy()
    y[:, 0] = 0
    with pytest.raises(ValueError, match=f"genre '{data.genres[0]}' has only one class"):
        LinearGenreModel.fit(data.encoder, data.genres, data.x_train, y, LINEAR)


# --- XGBoost ----------------------------------------------------------------------------


def test_select_features(data: Data) -> None:
    selected = select_features(data.x_train, data.y_train, 500)
    assert selected.shape == (500,)
    assert (np.diff(selected) > 0).all()  # sorted, unique
    assert selected.max() < data.x_train.shape[1]
    everything = select_features(data.x_train[:, :50], data.y_train, 500)
    np.testing.assert_array_equal(everything, np.arange(50))


def test_xgboost_roundtrip_and_no_pickle(xgboost: XGBoostGenreModel, data: Data,
                                         tmp_path: Path) -> None:
    before = xgboost.predict_proba(data.test_texts)
    assert before.shape == (len(data.test_texts), len(data.genres))
    assert ((before >= 0) & (before <= 1)).all()
    assert xgboost.selected.shape == (XGB.k_best_features,)
    xgboost.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "booster.ubj", "linear_scores.npz", "selected_features.npy", "tfidf_encoder.json",
        "xgboost_model.json"]
    assert assert_no_pickle(tmp_path) == 5  # selected terms + logistic and naive Bayes scorers
    assert (tmp_path / "booster.ubj").read_bytes()[:1] == b"{"  # UBJSON object
    loaded = XGBoostGenreModel.load(tmp_path)
    assert loaded.genres == data.genres
    assert loaded.params == XGB
    assert loaded.best_iteration == xgboost.best_iteration
    np.testing.assert_array_equal(loaded.selected, xgboost.selected)
    np.testing.assert_allclose(loaded.predict_proba(data.test_texts), before, rtol=1e-6)


def test_xgboost_trains_and_logs(xgboost: XGBoostGenreModel, data: Data,
                                 xgb_logs: list[dict[str, float]]) -> None:
    # all 20 rounds run (patience 30); predictions use the round best on validation
    assert xgboost.booster.num_boosted_rounds() == XGB.n_estimators
    assert 0 <= xgboost.best_iteration < XGB.n_estimators
    assert [log["round"] for log in xgb_logs] == [0, 10]
    assert xgb_logs[1]["train/logloss"] < xgb_logs[0]["train/logloss"]
    probs = xgboost.predict_proba(data.train_texts)
    drama = data.genres.index("Drama")
    assert (probs[data.y_train[:, drama] == 1, drama].mean()
            > probs[data.y_train[:, drama] == 0, drama].mean())


def test_xgboost_shape_errors(data: Data) -> None:
    with pytest.raises(ValueError, match="labels have shape"):
        XGBoostGenreModel.fit(data.encoder, data.genres, data.x_train, data.y_train[:, 1:],
                              data.x_val, data.y_val, XGB)
    with pytest.raises(ValueError, match="labels have shape"):
        XGBoostGenreModel.fit(data.encoder, data.genres[:-1], data.x_train, data.y_train,
                              data.x_val, data.y_val, XGB)
