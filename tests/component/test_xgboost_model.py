"""XGBoostGenreModel internals, its search, the tuning asset and the benchmark's plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from dagster import AssetKey, asset, materialize_to_memory
from scipy.special import expit
from sklearn.feature_selection import chi2
from sklearn.naive_bayes import MultinomialNB

from resources.tracking import WandbTracker
from tests.helpers import REPO
from trending_assets.assets.tuning import xgboost_hyperparameters
from trending_assets.bench import xgboost as bench
from trending_assets.ml.config import section_params
from trending_assets.ml.dataset import (
    TitleSplits,
    assign_splits,
    build_training_table,
    label_matrix,
)
from trending_assets.ml.stacked_scores import (
    chi2_scores,
    fit_linear_scores,
    fit_nb_scores,
    out_of_fold_scores,
    rare_genre_row_weights,
)
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures, TfidfParams
from trending_assets.ml.xgboost_model import (
    DEFAULT_SEARCH_GRID,
    XGBoostGenreModel,
    XGBoostParams,
    cgroup_cpu_quota,
    cuda_build,
    grid_trials,
    search_hyperparameters,
    usable_cores,
)
from trending_assets.settings import SettingsResource, load_settings

SMALL = section_params(XGBoostParams, "xgboost", n_estimators=15, max_depth=3,
                       learning_rate=0.3, max_bin=32, k_best_features=300,
                       early_stopping_rounds=10, linear_folds=3, n_jobs=1)


class Data:
    def __init__(self, netflix: pd.DataFrame) -> None:
        taxonomy = Taxonomy.from_config(
            yaml.safe_load((REPO / "configs" / "genres.yaml").read_text()))
        table, self.genres, _ = build_training_table([netflix.head(1500)], taxonomy)
        table = assign_splits(table, 0.15, 0.1, "trending-now-split-v1")
        part = {s: table[table["split"] == s] for s in ("train", "val", "test")}
        self.texts = {s: part[s]["description"].tolist() for s in part}
        self.y = {s: label_matrix(part[s]["labels"], self.genres) for s in part}
        self.encoder = TfidfEncoder.fit(self.texts["train"], section_params(TfidfParams, "tfidf"))
        self.x = {s: self.encoder.transform(self.texts[s]) for s in part}

    def fit(self, params: XGBoostParams = SMALL, **kwargs) -> XGBoostGenreModel:
        return XGBoostGenreModel.fit(self.encoder, self.genres, self.x["train"],
                                     self.y["train"], self.x["val"], self.y["val"], params,
                                     **kwargs)


@pytest.fixture(scope="module")
def data(netflix: pd.DataFrame) -> Data:
    return Data(netflix)


@pytest.fixture(scope="module")
def model(data: Data) -> XGBoostGenreModel:
    return data.fit()


# --- parameters and settings ------------------------------------------------------------


def test_settings_hold_the_params_the_trainer_takes() -> None:
    configured = load_settings("local").xgboost
    assert type(configured) is XGBoostParams
    base = yaml.safe_load((REPO / "configs" / "base.yaml").read_text())["xgboost"]
    assert configured == XGBoostParams.model_validate(base)
    assert configured.n_estimators == 400 and configured.max_bin == 16


@pytest.mark.parametrize("bad, message", [
    ({"linear_folds": 1}, "linear_folds"),
    ({"linear_folds": 0}, "boost_from_linear"),
    ({"linear_folds": 0, "boost_from_linear": False}, "nb_scores"),
    ({"multi_strategy": "per_genre"}, "multi_strategy"),
    ({"device": "tpu"}, "device"),
    ({"linear_max_rows": -1}, "linear_max_rows"),
])
def test_params_reject_bad_values(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SMALL.replace(**bad)


def test_params_reject_unknown_and_missing_keys() -> None:
    assert SMALL.replace(max_depth=2).max_depth == 2
    with pytest.raises(ValueError, match="max_dpeth"):
        XGBoostParams.model_validate({**SMALL.model_dump(), "max_dpeth": 3})
    with pytest.raises(ValueError, match="max_depth"):  # no default to fall back on
        XGBoostParams.model_validate(SMALL.model_dump(exclude={"max_depth"}))


# --- CPU limit --------------------------------------------------------------------------


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None  # no cgroup files: unlimited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == pytest.approx(1.5)
    assert 1 <= usable_cores(tmp_path) <= 2  # 1.5 CPUs -> at most 2 threads
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cores(tmp_path) == 1


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_quota(tmp_path) == pytest.approx(3.0)


# --- features ---------------------------------------------------------------------------


def test_chi2_scores_match_sklearn(data: Data) -> None:
    x, y = data.x["train"][:, :2000], data.y["train"]
    ours = chi2_scores(x, y)
    assert ours.shape == (len(data.genres), 2000)
    for j in range(len(data.genres)):
        expected, _ = chi2(x, y[:, j])
        np.testing.assert_allclose(ours[j], np.nan_to_num(expected), rtol=1e-4, atol=1e-7)


def test_linear_scores_fold_without_positives(data: Data) -> None:
    x, y = data.x["train"], data.y["train"].copy()
    y[:, 0] = 0
    coef, intercept = fit_linear_scores(x, y, C=4.0)
    assert coef.shape == (y.shape[1], x.shape[1]) and coef.dtype == np.float32
    assert not coef[0].any() and intercept[0] < -5  # constant "never" score
    assert np.abs(coef[1]).sum() > 0


def test_nb_scores_match_sklearn(data: Data) -> None:
    x, y = data.x["train"], data.y["train"]
    weights, intercept = fit_nb_scores(x, y, alpha=0.1)
    ours = x @ weights.T + intercept
    for genre in ("Drama", "Documentary", data.genres[-1]):
        j = data.genres.index(genre)
        joint = MultinomialNB(alpha=0.1).fit(x, y[:, j]).predict_joint_log_proba(x)
        np.testing.assert_allclose(ours[:, j], joint[:, 1] - joint[:, 0], rtol=1e-3, atol=1e-3)


def test_out_of_fold_scores_are_honest(data: Data) -> None:
    x, y = data.x["train"], data.y["train"]
    stacked = out_of_fold_scores(x, y, folds=3, C=4.0, nb=True)
    oof = stacked.train_linear
    coef, intercept = fit_linear_scores(x, y, C=4.0)
    in_sample = x @ coef.T + intercept
    assert oof.shape == y.shape and oof.dtype == np.float32
    assert stacked.train_nb.shape == y.shape
    assert stacked.linear[0].shape == coef.shape and stacked.nb[0].shape == coef.shape
    # in-sample scores separate the train labels (nearly) perfectly; held-out ones do not
    drama = data.genres.index("Drama")
    gap_in = in_sample[y[:, drama] == 1, drama].mean() - in_sample[y[:, drama] == 0, drama].mean()
    gap_oof = oof[y[:, drama] == 1, drama].mean() - oof[y[:, drama] == 0, drama].mean()
    assert 0 < gap_oof < gap_in
    # the fold average scores new rows like a model of the same strength
    val = data.x["val"] @ stacked.linear[0].T + stacked.linear[1]
    full = data.x["val"] @ coef.T + intercept
    assert np.corrcoef(val[:, drama], full[:, drama])[0, 1] > 0.95


def test_linear_rows_are_capped_per_fold(data: Data) -> None:
    x, y = data.x["train"], data.y["train"]
    capped = out_of_fold_scores(x, y, folds=3, C=4.0, max_rows=200)
    full = out_of_fold_scores(x, y, folds=3, C=4.0)
    assert capped.train_linear.shape == full.train_linear.shape
    # fewer rows, weaker scorer: the capped scores separate Drama less well
    drama = data.genres.index("Drama")
    labels = y[:, drama] == 1

    def gap(scores: np.ndarray) -> float:
        return scores[labels, drama].mean() - scores[~labels, drama].mean()

    assert 0 < gap(capped.train_linear) < gap(full.train_linear)
    again = out_of_fold_scores(x, y, folds=3, C=4.0, max_rows=200)
    np.testing.assert_array_equal(again.train_linear, capped.train_linear)  # seeded


def test_rare_genre_row_weights() -> None:
    y = np.array([[1, 0], [1, 0], [1, 0], [1, 1], [0, 0]], dtype=np.int8)
    assert rare_genre_row_weights(y, 0.0) is None
    w = rare_genre_row_weights(y, 1.0)
    assert w.mean() == pytest.approx(1.0)
    assert w[3] > w[0] == w[1] == w[2]  # the row with the rare genre counts more
    assert w[4] < w[3]


# --- the model --------------------------------------------------------------------------


def test_fit_never_densifies(data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a sparse matrix was densified")

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    fitted = data.fit()
    assert fitted.predict_proba(data.texts["test"]).shape == (len(data.texts["test"]),
                                                              len(data.genres))


def test_predictions_and_thresholds(model: XGBoostGenreModel, data: Data) -> None:
    probs = model.predict_proba(data.texts["test"])
    assert probs.shape == (len(data.texts["test"]), len(data.genres))
    assert probs.dtype == np.float32 and ((probs > 0) & (probs < 1)).all()
    assert model.thresholds.shape == (len(data.genres),)
    assert ((model.thresholds >= 0.05) & (model.thresholds <= 0.95)).all()
    np.testing.assert_array_equal(model.predict(data.texts["test"]),
                                  (probs >= model.thresholds).astype(np.int8))
    assert model.predict_proba([]).shape == (0, len(data.genres))
    assert model.selected.shape == (SMALL.k_best_features,)
    assert set(model.timings) == {"linear_s", "select_s", "boost_s", "thresholds_s"}
    # beats chance on train for a frequent genre
    train = model.predict_proba(data.texts["train"])
    drama = data.genres.index("Drama")
    y = data.y["train"][:, drama]
    assert train[y == 1, drama].mean() > train[y == 0, drama].mean() + 0.1


def test_boosting_starts_from_the_linear_scores(data: Data) -> None:
    # One tiny step: predictions are the linear model's probabilities, barely corrected.
    params = SMALL.replace(n_estimators=1, learning_rate=1e-4)
    tiny = data.fit(params)
    expected = expit(data.x["test"] @ tiny.linear[0].T + tiny.linear[1])
    np.testing.assert_allclose(tiny.predict_proba(data.texts["test"]), expected, atol=1e-3)


def test_roundtrip_without_pickle(model: XGBoostGenreModel, data: Data, tmp_path: Path) -> None:
    before = model.predict_proba(data.texts["test"])
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "booster.ubj", "linear_scores.npz", "selected_features.npy", "tfidf_encoder.json",
        "xgboost_model.json"]
    for path in tmp_path.iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol marker
    with np.load(tmp_path / "linear_scores.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["coef", "intercept", "nb_coef", "nb_intercept"]
    meta = json.loads((tmp_path / "xgboost_model.json").read_text())
    assert meta["params"] == SMALL.model_dump()
    loaded = XGBoostGenreModel.load(tmp_path)
    assert loaded.params == SMALL and loaded.genres == data.genres
    np.testing.assert_array_equal(loaded.thresholds, model.thresholds)
    np.testing.assert_allclose(loaded.predict_proba(data.texts["test"]), before, rtol=1e-6)


def test_load_refuses_missing_linear_scores(model: XGBoostGenreModel, tmp_path: Path) -> None:
    model.save(tmp_path)
    (tmp_path / "linear_scores.npz").unlink()
    with pytest.raises(ValueError, match=r"linear_scores\.npz"):
        XGBoostGenreModel.load(tmp_path)


def test_without_linear_scores_and_multi_output_trees(data: Data, tmp_path: Path) -> None:
    plain = SMALL.replace(**{"linear_folds": 0, "boost_from_linear": False,
                             "nb_scores": False, "multi_strategy": "multi_output_tree",
                             "rare_genre_weight": 0.5})
    fitted = data.fit(plain)
    assert fitted.linear is None
    probs = fitted.predict_proba(data.texts["val"])
    assert probs.shape == (len(data.texts["val"]), len(data.genres))
    fitted.save(tmp_path)
    assert not (tmp_path / "linear_scores.npz").exists()
    np.testing.assert_allclose(XGBoostGenreModel.load(tmp_path).predict_proba(data.texts["val"]),
                               probs, rtol=1e-6)


def test_validation_shape_checked(data: Data) -> None:
    with pytest.raises(ValueError, match="validation labels"):
        XGBoostGenreModel.fit(data.encoder, data.genres, data.x["train"], data.y["train"],
                              data.x["val"], data.y["val"][:, 1:], SMALL)


@pytest.mark.skipif(cuda_build(), reason="this XGBoost build has CUDA")
def test_cuda_on_a_cpu_build_is_a_clear_error(data: Data) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        data.fit(SMALL.replace(device="cuda"))


# --- search -----------------------------------------------------------------------------


def test_grid_trials() -> None:
    trials = grid_trials(SMALL, DEFAULT_SEARCH_GRID)
    assert len(trials) == np.prod([len(v) for v in DEFAULT_SEARCH_GRID.values()])
    assert len(set(trials)) == len(trials)
    assert all(t.max_bin == SMALL.max_bin for t in trials)
    with pytest.raises(ValueError, match="depht"):
        grid_trials(SMALL, {"depht": [1]})


def test_search_logs_every_trial_and_picks_the_best(data: Data) -> None:
    logs: list[dict] = []
    grid = {"max_depth": [2, 3], "learning_rate": [0.3]}
    result = search_hyperparameters(data.encoder, data.genres, data.x["train"],
                                    data.y["train"], data.x["val"], data.y["val"], SMALL, grid,
                                    log_fn=logs.append)
    assert [log["trial"] for log in logs] == [0, 1]
    assert [log["params/max_depth"] for log in logs] == [2, 3]
    scores = [t["val_macro_f1"] for t in result["trials"]]
    assert result["best_trial"] == int(np.argmax(scores))
    assert result["best"] == result["trials"][result["best_trial"]]["params"]
    assert XGBoostParams.model_validate(result["best"]).max_depth in (2, 3)
    assert all(0 < s <= 1 for s in scores)
    json.dumps(result)  # JSON-able: stored by the IO manager and W&B as is


@pytest.mark.e2e  # a hyperparameter search: too slow for make test-fast
def test_tuning_asset_runs_alone_and_skips_beside_training(data: Data, tmp_path: Path) -> None:
    @asset(name="tfidf_features")
    def features():
        return TfidfFeatures(data.encoder, data.genres, data.x["train"], data.y["train"],
                             data.x["val"], data.y["val"])

    @asset(name="data_splits")
    def splits():
        table = pd.DataFrame({"id": ["a"], "labels": ["Drama"], "split": ["train"]})
        return TitleSplits(table, data.genres)

    @asset(name="xgboost_model", deps=["tfidf_features"])
    def training():
        return 1

    resources = {
        "settings": SettingsResource(overrides_json=json.dumps({"xgboost": SMALL.model_dump()})),
        "tracker": WandbTracker(mode="offline", dir=str(tmp_path / "wandb")),
    }
    alone = materialize_to_memory([features, splits, xgboost_hyperparameters],
                                  resources=resources)
    assert alone.success
    value = alone.output_for_node("xgboost_hyperparameters")
    assert len(value["trials"]) == len(grid_trials(SMALL, DEFAULT_SEARCH_GRID))
    assert value["settings_overlay"] == {"xgboost": value["best"]}
    assert XGBoostParams.model_validate(value["best"]).n_estimators == SMALL.n_estimators
    runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1

    beside = materialize_to_memory([features, splits, training, xgboost_hyperparameters],
                                   resources=resources)
    assert beside.success
    keys = {e.asset_key for e in beside.get_asset_materialization_events()}
    assert AssetKey("xgboost_hyperparameters") not in keys
    assert AssetKey("xgboost_model") in keys
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 1


# --- benchmark plumbing -----------------------------------------------------------------


def test_derived_rows_mix_two_titles() -> None:
    texts = ["a1 a2 a3 a4", "b1 b2 b3 b4 b5 b6", "c1 c2"]
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.int8)
    out, labels = bench.derived_rows(texts, y, copies=4, seed=1)
    assert len(out) == 12 and labels.shape == (12, 3) and labels.dtype == np.int8
    assert (out, labels.tolist()) == (lambda o, lab: (o, lab.tolist()))(
        *bench.derived_rows(texts, y, copies=4, seed=1))
    heads = {"a": "a1 a2", "b": "b1 b2 b3", "c": "c1"}
    tails = {"a": "a3 a4", "b": "b4 b5 b6", "c": "c2"}
    for k, (text, row) in enumerate(zip(out, labels, strict=True)):
        own = "abc"[k % 3]
        assert text.startswith(heads[own] + " ")
        partner = text[len(heads[own]) + 1:][0]
        assert text == f"{heads[own]} {tails[partner]}"
        assert row.tolist() == np.maximum(y["abc".index(own)], y["abc".index(partner)]).tolist()


def test_scaled_train_shapes(data: Data) -> None:
    n = data.x["train"].shape[0]
    x, y = bench.scaled_train(data.encoder, data.x["train"], data.texts["train"],
                              data.y["train"], 3)
    assert x.shape == (3 * n, data.x["train"].shape[1])
    assert isinstance(x, sp.csr_matrix)
    assert (x[:n] != data.x["train"]).nnz == 0  # the real rows come first, unchanged
    np.testing.assert_array_equal(y[:n], data.y["train"])
    assert (y[n:] >= np.tile(data.y["train"], (2, 1))).all()  # union with a partner's genres


def test_measure_sees_peak_memory() -> None:
    measured = bench.measure(lambda: np.ones(50_000_000 // 8).sum())
    assert measured.result == 50_000_000 // 8
    assert measured.seconds > 0 and measured.cpu_seconds > 0
    assert measured.peak_mb > 30  # MB: the 50 MB array was resident at some point


def test_growth_figures() -> None:
    scaling = {"1": {"rows": 10, "ours": {"rows": 10, "fit_s": 2.0, "fit_cpu_s": 3.0,
                                           "rounds_run": 50, "stages_s": {"boost_s": 1.0},
                                           "peak_fit_mb": 100.0}},
               "100": {"rows": 1000, "ours": {"rows": 1000, "fit_s": 100.0, "fit_cpu_s": 30.0,
                                               "rounds_run": 100, "stages_s": {"boost_s": 50.0},
                                               "peak_fit_mb": 1000.0}}}
    g = bench.growth(scaling, "ours")
    assert g == {"from_scale": 1, "to_scale": 100, "rows_x": 100.0, "fit_x": 50.0,
                 "fit_cpu_x": 10.0, "fit_per_round_x": 25.0, "peak_mb_x": 10.0}
    assert bench.growth(scaling, "naive") is None


@pytest.mark.e2e  # a worker process that imports the stack: too slow for make test-fast
def test_worker_process_reports_json(data: Data, tmp_path: Path) -> None:
    bench_data = bench.BenchData(
        genres=data.genres, encoder=data.encoder, val_texts=data.texts["val"],
        test_texts=data.texts["test"], x_val=data.x["val"], y_val=data.y["val"],
        y_test=data.y["test"], train={1: (data.x["train"], data.y["train"])})
    bench_data.save(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.suffix in {".pkl", ".pickle"}]
    loaded = bench.BenchData.load(tmp_path, [1])
    assert loaded.genres == data.genres and loaded.test_texts == data.texts["test"]
    assert (loaded.train[1][0] != data.x["train"]).nnz == 0
    config = {"reference": {"C": 4.0, "max_iter": 1000, "balanced": True},
              "xgboost": SMALL.model_dump(), "threads": 1}
    ours = bench.run_isolated("ours", 1, config, tmp_path, repeat=2)
    assert ours.pop("ok") is True
    assert ours["fits"] == 2
    assert ours["fit_s"] > 0 and ours["fit_cpu_s"] > 0 and ours["predict_s"] > 0
    assert ours["peak_fit_mb"] > 0
    assert 0 < ours["macro_f1"] <= 1 and 0 < ours["micro_f1"] <= 1
    assert 1 <= ours["rounds"] <= ours["rounds_run"] <= SMALL.n_estimators
    assert set(ours["stages_s"]) == {"linear_s", "select_s", "boost_s", "thresholds_s"}
    reference = bench.run_isolated("reference", 1, config, tmp_path)
    assert reference.pop("ok") is True and "rounds" not in reference
    broken = bench.run_isolated("nonexistent", 1, config, tmp_path)
    assert broken == {"ok": False, "error": "ValueError: nonexistent"}
