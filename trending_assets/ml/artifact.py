"""The storage contract every trained object follows: a folder of code-free files."""

from __future__ import annotations

import os
import tempfile
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


def write_temp_beside(path: Path, data: bytes) -> str:
    """Write `data` to a durable temp file in `path`'s folder and return its name.

    The caller renames (or hard-links) it into place: readers then see either no file or
    the whole file, never a torn one, because a rename within one folder is atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp
