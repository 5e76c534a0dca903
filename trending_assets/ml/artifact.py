"""The storage contract every trained object follows: a folder of code-free files."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np


@runtime_checkable
class Artifact(Protocol):
    """Saved as plain files (Parquet, npz, JSON, safetensors, XGBoost UBJ); never pickle.

    `load` is chosen by the caller's declared type, never by anything read from storage,
    so loading cannot execute code.
    """

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...


class GenreClassifier(Protocol):
    """A trained multi-label model: probabilities per genre, columns in `genres` order."""

    genres: list[str]

    def predict_proba(self, inputs) -> np.ndarray: ...
