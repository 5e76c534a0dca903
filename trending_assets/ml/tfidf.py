"""TF-IDF text encoding, stored as a vocabulary and idf weights (no pickle)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from sklearn.feature_extraction.text import TfidfVectorizer

from trending_assets.ml.config import StrictModel

ENCODER_FILE = "tfidf_encoder.json"


class TfidfParams(StrictModel):
    """The `tfidf:` section of configs/base.yaml (which holds the values)."""

    ngram_max: int = Field(ge=1, le=3)
    min_df: int = Field(ge=1, le=1000)
    max_features: int = Field(ge=100, le=2_000_000)
    sublinear_tf: bool


class TfidfEncoder:
    """A fitted TfidfVectorizer reduced to what transform needs: vocabulary and idf."""

    def __init__(self, params: TfidfParams, vocabulary: dict[str, int], idf: np.ndarray) -> None:
        self.params = params
        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, params.ngram_max), sublinear_tf=params.sublinear_tf,
            vocabulary=vocabulary, dtype=np.float32,
        )
        self.vectorizer.idf_ = idf

    @classmethod
    def fit(cls, texts: Sequence[str], params: TfidfParams) -> Self:
        fitted = TfidfVectorizer(
            ngram_range=(1, params.ngram_max), min_df=params.min_df,
            max_features=params.max_features, sublinear_tf=params.sublinear_tf,
            dtype=np.float32,
        ).fit(texts)
        vocabulary = {term: int(i) for term, i in fitted.vocabulary_.items()}
        return cls(params, vocabulary, fitted.idf_)

    @property
    def n_features(self) -> int:
        return len(self.vectorizer.vocabulary)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.vectorizer.transform(texts).tocsr()

    def to_json(self) -> dict:
        return {
            "params": self.params.model_dump(),
            "vocabulary": self.vectorizer.vocabulary,
            "idf": self.vectorizer.idf_.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict) -> Self:
        return cls(TfidfParams(**data["params"]), data["vocabulary"],
                   np.asarray(data["idf"], dtype=np.float64))

    def save(self, directory: Path) -> None:
        (directory / ENCODER_FILE).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, directory: Path) -> Self:
        return cls.from_json(json.loads((directory / ENCODER_FILE).read_text()))


class TfidfFeatures:
    """The encoder fitted on train, and the encoded train/validation matrices with labels."""

    def __init__(
        self, encoder: TfidfEncoder, genres: list[str],
        x_train: sp.csr_matrix, y_train: np.ndarray, x_val: sp.csr_matrix, y_val: np.ndarray,
    ) -> None:
        self.encoder, self.genres = encoder, genres
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val

    def save(self, directory: Path) -> None:
        self.encoder.save(directory)
        (directory / "genres.json").write_text(json.dumps(self.genres))
        sp.save_npz(directory / "x_train.npz", self.x_train)
        sp.save_npz(directory / "x_val.npz", self.x_val)
        np.savez_compressed(directory / "labels.npz", y_train=self.y_train, y_val=self.y_val)

    @classmethod
    def load(cls, directory: Path) -> Self:
        labels = np.load(directory / "labels.npz", allow_pickle=False)
        return cls(
            TfidfEncoder.load(directory), json.loads((directory / "genres.json").read_text()),
            sp.load_npz(directory / "x_train.npz").tocsr(), labels["y_train"],
            sp.load_npz(directory / "x_val.npz").tocsr(), labels["y_val"],
        )
