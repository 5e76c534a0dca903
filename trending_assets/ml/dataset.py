"""Titles tables: reading landing files, building the training table, stable splits."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trending_assets.ml.taxonomy import Taxonomy

REQUIRED_COLUMNS = ("id", "title", "kind", "description", "genres", "year", "source")
TAG_SEPARATOR = "|"
SPLITS = ("train", "val", "test")


class LandingFileError(ValueError):
    """A landing file cannot be read as a titles table; the message says what to fix."""


def read_titles(data: bytes, name: str) -> pd.DataFrame:
    """Parse a landing file (CSV, optionally gzip) into a titles table with checked columns."""
    if not data.strip():
        raise LandingFileError(f"{name}: the file is empty; upload a CSV with a header row")
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False,
            compression="gzip" if data[:2] == b"\x1f\x8b" else None,
        )
    except pd.errors.EmptyDataError as exc:  # e.g. a gzip file with nothing inside
        raise LandingFileError(
            f"{name}: the file is empty; upload a CSV with a header row"
        ) from exc
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as exc:
        raise LandingFileError(f"{name}: cannot be parsed as CSV ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise LandingFileError(
            f"{name}: missing column(s) {', '.join(missing)}; a landing file needs "
            f"{', '.join(REQUIRED_COLUMNS)} (genres separated by '{TAG_SEPARATOR}')"
        )
    year = pd.to_numeric(frame["year"], errors="coerce").astype("float64")
    # NaN, inf, fractions ("2020.5") and values past int64 are not integer years: casting
    # them would raise a raw pandas error, truncate silently, or overflow.
    is_int = np.isfinite(year) & (year == np.floor(year)) & (year.abs() < 2**53)
    if not is_int.all():
        bad = frame.loc[~is_int, "id"].head(5).tolist()
        raise LandingFileError(f"{name}: 'year' is not an integer for ids {bad}")
    frame = frame.assign(year=year.astype("int64"))
    return frame


@dataclass
class TrainingTableStats:
    """What building the training table did to the rows, for reports and checks."""

    input_rows: int = 0
    duplicate_ids_replaced: int = 0
    rows_without_genre: int = 0
    unknown_tags: dict[str, int] = field(default_factory=dict)
    genres_below_min_support: list[str] = field(default_factory=list)


def build_training_table(
    batches: Sequence[pd.DataFrame], taxonomy: Taxonomy
) -> tuple[pd.DataFrame, list[str], TrainingTableStats]:
    """Concatenate batches (later batches win on repeated ids), map tags to canonical genres.

    Returns the table with a `labels` column (canonical genres joined by '|'; titles left
    with no supported genre are dropped), the supported genre list, and statistics.
    """
    stats = TrainingTableStats()
    frame = pd.concat([b[list(REQUIRED_COLUMNS)] for b in batches], ignore_index=True)
    stats.input_rows = len(frame)
    deduped = frame.drop_duplicates("id", keep="last")
    stats.duplicate_ids_replaced = len(frame) - len(deduped)

    mapped: list[list[str]] = []
    for tags in deduped["genres"]:
        labels, unknown = taxonomy.map_tags(tags.split(TAG_SEPARATOR))
        mapped.append(labels)
        for tag in unknown:
            stats.unknown_tags[tag] = stats.unknown_tags.get(tag, 0) + 1
    genres = taxonomy.supported_genres(mapped)
    stats.genres_below_min_support = [
        g for g in taxonomy.genres if g not in genres and any(g in m for m in mapped)
    ]
    kept = [[g for g in labels if g in genres] for labels in mapped]
    table = deduped.assign(labels=[TAG_SEPARATOR.join(k) for k in kept])
    has_genre = table["labels"] != ""
    stats.rows_without_genre = int((~has_genre).sum())
    table = table[has_genre].sort_values("id", kind="stable").reset_index(drop=True)
    return table, genres, stats


def split_of(title_id: str, val_fraction: float, test_fraction: float, salt: str) -> str:
    """Split of one title from a hash of its id: stable when rows are added or reordered."""
    digest = hashlib.sha256(f"{salt}:{title_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(
    table: pd.DataFrame, val_fraction: float, test_fraction: float, salt: str
) -> pd.DataFrame:
    """The table with a `split` column (train/val/test)."""
    splits = [split_of(i, val_fraction, test_fraction, salt) for i in table["id"]]
    return table.assign(split=splits)


def label_matrix(labels: pd.Series, genres: Sequence[str]) -> np.ndarray:
    """Binary (rows x genres) matrix from '|'-joined label strings."""
    index = {g: j for j, g in enumerate(genres)}
    matrix = np.zeros((len(labels), len(genres)), dtype=np.int8)
    for i, joined in enumerate(labels):
        for genre in joined.split(TAG_SEPARATOR) if joined else ():
            if genre in index:
                matrix[i, index[genre]] = 1
    return matrix


def genres_present(labels: pd.Series, taxonomy: Taxonomy) -> list[str]:
    """Genres that occur in a `labels` column, in taxonomy order."""
    seen = {g for joined in labels if joined for g in joined.split(TAG_SEPARATOR)}
    return [g for g in taxonomy.genres if g in seen]


class TitleSplits:
    """Labelled titles with their split, and the genre list every model is trained on."""

    TABLE_FILE = "splits.parquet"

    def __init__(self, table: pd.DataFrame, genres: list[str]) -> None:
        self.table, self.genres = table, genres

    def part(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split]

    def texts(self, split: str) -> list[str]:
        return self.part(split)["description"].tolist()

    def labels(self, split: str) -> np.ndarray:
        return label_matrix(self.part(split)["labels"], self.genres)

    def counts(self) -> dict[str, int]:
        return {s: int((self.table["split"] == s).sum()) for s in SPLITS}

    def save(self, directory: Path) -> None:
        self.table.to_parquet(directory / self.TABLE_FILE, index=False)
        (directory / "genres.json").write_text(json.dumps(self.genres))

    @classmethod
    def load(cls, directory: Path) -> TitleSplits:
        return cls(pd.read_parquet(directory / cls.TABLE_FILE),
                   json.loads((directory / "genres.json").read_text()))
