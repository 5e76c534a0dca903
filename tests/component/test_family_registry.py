"""A model family added through the registry trains, evaluates and registers.

What a real family touches, and all it touches: its own module under trending_assets/ml/
(a model class with `from_features` or `from_splits`, `predict_proba`, `save`, `load`,
and a parameter schema), its sections in configs/base.yaml (parameters and a gate), and
one `ModelFamily(...)` line in trending_assets/ml/families.py (plus its tests). This one
lives in the test module and borrows the `reference` parameter section: a few lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from tests.conftest import splits_asset, title_splits, write_test_configs
from trending_assets.assets.evaluation import evaluation_assets
from trending_assets.assets.features import tfidf_features
from trending_assets.assets.registry import registration_assets
from trending_assets.assets.training import training_assets
from trending_assets.automation.requests import RetrainRequest
from trending_assets.definitions import build_resources
from trending_assets.ml import families
from trending_assets.ml.families import ModelFamily, extra_family
from trending_assets.ml.linear import LinearParams
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures
from trending_assets.production import production_row
from trending_assets.settings import ConfigError, load_settings

CENTROIDS_FILE = "centroids.npz"


class CentroidGenreModel:
    """Cosine similarity of a title's TF-IDF vector to each genre's mean vector."""

    def __init__(self, encoder: TfidfEncoder, genres: list[str], centroids: np.ndarray) -> None:
        self.encoder, self.genres, self.centroids = encoder, list(genres), centroids

    @classmethod
    def from_features(cls, f: TfidfFeatures, params: LinearParams,
                      log_fn: Callable[[dict[str, float]], None] | None = None) -> Self:
        y = f.y_train.astype(np.float32)
        sums = np.asarray(f.x_train.T @ y).T  # genres x terms
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return cls(f.encoder, f.genres, (sums / np.maximum(norms, 1e-12)).astype(np.float32))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        # TF-IDF rows and centroids are non-negative and unit length: cosine is in [0, 1].
        return np.asarray(self.encoder.transform(texts) @ self.centroids.T, dtype=np.float32)

    def save(self, directory: Path) -> None:
        self.encoder.save(directory)
        np.savez_compressed(directory / CENTROIDS_FILE, centroids=self.centroids)
        (directory / "centroid_model.json").write_text(json.dumps({"genres": self.genres}))

    @classmethod
    def load(cls, directory: Path) -> Self:
        genres = json.loads((directory / "centroid_model.json").read_text())["genres"]
        with np.load(directory / CENTROIDS_FILE, allow_pickle=False) as arrays:
            return cls(TfidfEncoder.load(directory), genres, arrays["centroids"])


# The one registry line.
CENTROID = ModelFamily(
    "centroid", LinearParams, "reference", "tfidf", f"{__name__}:CentroidGenreModel", 0.0, "1",
    ("numpy",), "TF-IDF nearest genre centroid (cosine).")

FLOORS_OFF = {"min_macro_f1": 0.0, "min_micro_f1": 0.0, "genre_floor": None, "slices": []}


@pytest.mark.e2e  # trains and registers through the generated assets: slow for test-fast
def test_an_added_family_trains_evaluates_and_registers(tmp_path: Path, tiny_bert_dir: Path,
                                                        netflix: pd.DataFrame) -> None:
    root = tmp_path / "root"
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir,
                                    {"gates": {"centroid": FLOORS_OFF}})
    splits = title_splits(netflix.sample(1200, random_state=0), 0.15, 0.15, "family-test")
    with pytest.raises(ConfigError, match="no model family centroid"):
        load_settings("local", config_dir)  # not registered: its gate is a typo

    with extra_family(CENTROID):
        settings = load_settings("local", config_dir)
        # Everything that lists families now lists it.
        assert families.names()[-1] == "centroid" and "centroid" in families.registered_names()
        assert RetrainRequest.model_validate({"reason": "r", "requested_by": "me",
                                              "families": ["centroid"]}).families == (
            "centroid",)
        assets = [splits_asset(splits), tfidf_features, *training_assets(),
                  *evaluation_assets(), *registration_assets()]
        names = {a.key.to_user_string() for a in assets}
        assert {"centroid_model", "centroid_evaluation", "registered_centroid_model"} <= names

        selection = [AssetKey(n) for n in (
            "data_splits", "tfidf_features", "reference_model", "reference_evaluation",
            "centroid_model", "centroid_evaluation", "registered_centroid_model")]
        instance = DagsterInstance.ephemeral()
        result = materialize(assets, selection=selection, instance=instance,
                             resources=build_resources(settings), raise_on_error=False)
        assert result.success

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["centroid_meets_thresholds"].passed
    evaluation = metadata(result, "centroid_evaluation")
    reference = metadata(result, "reference_evaluation")
    assert 0.05 < evaluation["macro_f1"] < reference["macro_f1"] + 0.2
    registered = metadata(result, "registered_centroid_model")
    assert (registered["model_name"], registered["version"], registered["registered"]) == (
        "trending-now-centroid", 1, True)
    # A person reads the decision first, and what is in production as `cli summary` says it.
    assert list(registered)[:5] == ["decision", "version", "aliases", "reason", "in_production"]
    registry = build_resources(settings)["registry"].open()
    production = production_row(registry, "centroid")
    assert registered["in_production"] == production.describe()
    assert production.version == (1 if "production" in registered["aliases"] else None)
    assert registered["macro_f1"] == round(evaluation["macro_f1"], 3)
    # The registered files load through the family's class and score as trained.
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    registry.download("trending-now-centroid", 1, downloaded)
    loaded = CentroidGenreModel.load(downloaded)
    trained = result.output_for_node("centroid_model")
    texts = splits.texts("test")[:20]
    np.testing.assert_array_equal(loaded.predict_proba(texts), trained.predict_proba(texts))
    assert "centroid" not in families.names()  # registered for the test only


def metadata(result: Any, asset: str) -> dict[str, Any]:
    event = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key == AssetKey(asset))
    return {k: getattr(v, "value", v)
            for k, v in event.step_materialization_data.materialization.metadata.items()}
