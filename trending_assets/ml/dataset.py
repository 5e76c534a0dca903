"""Titles tables: the training table built from accepted batches, stable splits by title id.

Reading a landing file into a batch is in landing_file.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trending_assets.ml.landing_file import REQUIRED_COLUMNS, TAG_SEPARATOR
from trending_assets.ml.taxonomy import Taxonomy

SPLITS = ("train", "val", "test")
OOD_SPLIT = "ood"  # other platforms' titles: scored, never trained on


@dataclass
class TrainingTableStats:
    """What building the training table did to the rows, for reports and checks."""

    input_rows: int = 0
    duplicate_ids_replaced: int = 0
    duplicate_ids_within_batches: int = 0  # a later row of the same batch won
    duplicate_ids_across_batches: int = 0  # a row of a later batch won
    duplicate_id_sample: list[str] = field(default_factory=list)
    rows_without_genre: int = 0
    rows_with_unknown_tags: int = 0
    unknown_tags: dict[str, int] = field(default_factory=dict)
    genres_below_min_support: list[str] = field(default_factory=list)


def build_training_table(
    batches: Sequence[pd.DataFrame], taxonomy: Taxonomy
) -> tuple[pd.DataFrame, list[str], TrainingTableStats]:
    """Concatenate batches (later batches win on repeated ids), map tags to canonical genres.

    Within a batch the last row with an id wins; across batches the later batch wins.
    Returns the table with a `labels` column (canonical genres joined by '|'; titles left
    with no supported genre are dropped), the supported genre list, and statistics.
    """
    stats = TrainingTableStats()
    if not batches:
        batches = [pd.DataFrame({c: pd.Series(dtype=str) for c in REQUIRED_COLUMNS})]
    frame = pd.concat([b[list(REQUIRED_COLUMNS)] for b in batches], ignore_index=True)
    stats.input_rows = len(frame)
    stats.duplicate_ids_within_batches = sum(len(b) - b["id"].nunique() for b in batches)
    repeated = frame["id"].duplicated(keep="last")
    deduped = frame[~repeated]
    stats.duplicate_ids_replaced = int(repeated.sum())
    stats.duplicate_ids_across_batches = (
        stats.duplicate_ids_replaced - stats.duplicate_ids_within_batches)
    stats.duplicate_id_sample = list(dict.fromkeys(frame.loc[repeated, "id"].head(50)))[:5]

    # Map each distinct tag string once: a landing batch repeats few hundred combinations.
    codes, distinct = pd.factorize(deduped["genres"].astype(str))
    per_distinct = [taxonomy.map_tags(tags.split(TAG_SEPARATOR)) for tags in distinct]
    occurrences = np.bincount(codes, minlength=len(distinct))
    for (_, unknown), n in zip(per_distinct, occurrences, strict=True):
        if unknown:
            stats.rows_with_unknown_tags += int(n)
        for tag in unknown:
            stats.unknown_tags[tag] = stats.unknown_tags.get(tag, 0) + int(n)
    counts = dict.fromkeys(taxonomy.genres, 0)
    for (labels, _), n in zip(per_distinct, occurrences, strict=True):
        for genre in labels:
            counts[genre] += int(n)
    genres = [g for g in taxonomy.genres if counts[g] >= taxonomy.min_support]
    stats.genres_below_min_support = [
        g for g in taxonomy.genres if g not in genres and counts[g] > 0
    ]
    supported = set(genres)
    joined = np.array(
        [TAG_SEPARATOR.join(g for g in labels if g in supported) for labels, _ in per_distinct],
        dtype=object,
    )
    table = deduped.assign(labels=joined[codes] if len(codes) else [])
    has_genre = table["labels"] != ""
    stats.rows_without_genre = int((~has_genre).sum())
    table = table[has_genre].sort_values("id", kind="stable").reset_index(drop=True)
    table["labels"] = table["labels"].astype(str)
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


def out_of_distribution_table(
    frame: pd.DataFrame, taxonomy: Taxonomy, genres: Sequence[str], max_rows: int, salt: str
) -> pd.DataFrame:
    """Other platforms' titles as `ood` split rows: tags mapped to the model genres, titles
    with none of them dropped, at most `max_rows` chosen by a salted hash of the id (the same
    rows for every model and every run)."""
    supported = set(genres)
    codes, distinct = pd.factorize(frame["genres"].astype(str))
    joined = np.array([TAG_SEPARATOR.join(g for g in taxonomy.map_tags(t.split(TAG_SEPARATOR))[0]
                                          if g in supported) for t in distinct], dtype=object)
    table = frame[list(REQUIRED_COLUMNS)].assign(labels=joined[codes] if len(codes) else [])
    table = table[table["labels"] != ""]
    rank = [hashlib.sha256(f"{salt}:ood:{i}".encode()).hexdigest() for i in table["id"]]
    table = (table.assign(_rank=rank).sort_values("_rank", kind="stable").head(max_rows)
             .drop(columns="_rank"))
    return (table.sort_values("id", kind="stable").reset_index(drop=True)
            .assign(labels=lambda t: t["labels"].astype(str), split=OOD_SPLIT))


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
        return {s: int((self.table["split"] == s).sum()) for s in (*SPLITS, OOD_SPLIT)}

    def save(self, directory: Path) -> None:
        self.table.to_parquet(directory / self.TABLE_FILE, index=False)
        (directory / "genres.json").write_text(json.dumps(self.genres))

    @classmethod
    def load(cls, directory: Path) -> TitleSplits:
        return cls(pd.read_parquet(directory / cls.TABLE_FILE),
                   json.loads((directory / "genres.json").read_text()))
