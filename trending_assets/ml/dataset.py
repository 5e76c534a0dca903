"""Titles tables: reading landing files, building the training table, stable splits."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from trending_assets.ml.taxonomy import Taxonomy

REQUIRED_COLUMNS = ("id", "title", "kind", "description", "genres", "year", "source")
TEXT_COLUMNS = ("id", "title", "kind", "description", "genres", "source")
TAG_SEPARATOR = "|"
SPLITS = ("train", "val", "test")
OOD_SPLIT = "ood"  # other platforms' titles: scored, never trained on
FORMATS = ("csv", "parquet", "jsonl", "json")

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_EXTENSION_FORMATS = {
    ".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
}
# Content signatures of files that are certainly not tables (checked before anything else).
_NOT_TABLES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one)"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document (e.g. an Excel .xls workbook)"),
    (b"RIFF", "a RIFF media file (WebP image, WAV audio, AVI video)"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_DELIMITERS = ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes"))
_FORMAT_NAMES = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines", "json": "JSON"}
UPLOAD_HINT = "upload a CSV (comma-separated, UTF-8), Parquet or JSON Lines file"


class LandingFileError(ValueError):
    """A landing file cannot be read as a titles table; the message says what to fix."""


@dataclass
class LandingLoad:
    """What reading one landing file gave: never raised, always reported.

    `problems` are reasons the file could not be read as a table at all (nothing in
    `frame`); `notes` are things worth knowing about a file that was read (extension and
    content disagree, extra columns). Row-level content, undecodable bytes included, is
    judged by the batch suite (trending_assets.checks), not here.
    """

    name: str
    sha256: str
    size_bytes: int
    format: str | None = None
    compression: str | None = None
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    undecodable_bytes: int = 0
    encoding_note: str = ""  # where the first undecodable byte is, when there are any

    @property
    def readable(self) -> bool:
        return not self.problems

    @property
    def missing_columns(self) -> list[str]:
        return [c for c in REQUIRED_COLUMNS if c not in self.frame.columns]


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_landing_file(data: bytes, name: str) -> LandingLoad:
    """Read a landing file (CSV, Parquet, JSON Lines; optionally gzip) without ever raising.

    The format comes from the content (magic bytes, first character) and the extension
    only breaks ties; a disagreement is noted. Text is decoded as UTF-8; undecodable
    bytes become U+FFFD and are counted, so the suite can name the rows that carry them.
    """
    load = LandingLoad(name=name, sha256=content_sha256(data), size_bytes=len(data))
    try:
        _read_into(load, data)
    except Exception as exc:  # a landing file must never crash ingestion
        load.frame = pd.DataFrame()
        load.problems.append(
            f"{name}: unexpected error while reading the file ({type(exc).__name__}: "
            f"{_clip(str(exc))}); {UPLOAD_HINT}"
        )
    return load


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_into(load: LandingLoad, data: bytes) -> None:
    name = load.name
    if not data.strip():
        load.problems.append(f"{name}: the file is empty ({len(data)} bytes); {UPLOAD_HINT} "
                             "with a header row")
        return
    stem = name
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            load.problems.append(
                f"{name}: starts like a gzip file but cannot be decompressed ({_clip(str(exc))});"
                " the upload was probably cut off: upload the complete file")
            return
        load.compression = "gzip"
        if stem.lower().endswith(".gz"):
            stem = stem[:-3]
        if not data.strip():
            load.problems.append(f"{name}: the file is empty (a gzip file with nothing inside); "
                                 f"{UPLOAD_HINT} with a header row")
            return
    fmt, not_table = _sniff(data)
    if not_table:
        load.problems.append(f"{name}: not a table: the content is {not_table}; {UPLOAD_HINT}")
        return
    assert fmt is not None
    by_extension = _EXTENSION_FORMATS.get(PurePosixPath(stem).suffix.lower())
    if by_extension and {by_extension, fmt} != {"jsonl", "json"} and by_extension != fmt:
        load.notes.append(
            f"{name}: the name says {_FORMAT_NAMES[by_extension]} but the content is "
            f"{_FORMAT_NAMES[fmt]}; read as {_FORMAT_NAMES[fmt]}")
    load.format = fmt
    reader = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_json_lines,
              "json": _read_json_array}[fmt]
    frame = reader(data, load)
    if frame is None:
        return
    frame.columns = [str(c).strip() for c in frame.columns]
    load.extra_columns = [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    if load.extra_columns:
        load.notes.append(
            f"{name}: extra column(s) {', '.join(load.extra_columns)} are not part of the "
            "landing format; accepted and kept, not used for training")
    load.frame = _blank_nulls(frame)


def _sniff(data: bytes) -> tuple[str | None, str | None]:
    """(format, None) for a table, or (None, what the content is) for anything else."""
    head = data[:8192]
    for signature, what in _NOT_TABLES:
        if head.startswith(signature):
            return None, what
    if head.startswith(_PARQUET_MAGIC):
        return "parquet", None
    if head.startswith(_UTF16_BOMS):
        return None, "UTF-16 text (landing files must be UTF-8)"
    if b"\x00" in head:
        return None, "binary data (it contains NUL bytes), not text"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] == b"{":
        return "jsonl", None
    if text[:1] == b"[":
        return "json", None
    return "csv", None


def _decode(data: bytes, load: LandingLoad) -> str:
    """UTF-8 text; undecodable bytes become U+FFFD, counted and located in a note."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8-sig", errors="replace")
        load.undecodable_bytes = text.count("\ufffd")
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start : exc.start + 1]
        load.encoding_note = (
            f"{load.name}: not valid UTF-8: {load.undecodable_bytes} undecodable byte "
            f"sequence(s), the first is 0x{byte.hex()} on line {line} ({byte.decode('latin-1')!r}"
            " if the file is Latin-1); re-export the file as UTF-8")
        return text


def _read_csv(data: bytes, load: LandingLoad) -> pd.DataFrame | None:
    text = _decode(data, load)
    # Another delimiter shows in the header before any row can fail to parse.
    header = text.lstrip().split("\n", 1)[0].strip()
    required = set(REQUIRED_COLUMNS)
    if len({f.strip().strip('"') for f in header.split(",")} & required) < 3:
        for delimiter, label in _DELIMITERS:
            if len({f.strip().strip('"') for f in header.split(delimiter)} & required) >= 3:
                load.problems.append(
                    f"{load.name}: columns are separated by {label} ({delimiter!r}), not commas "
                    f"(header: {_clip(header, 80)!r}); save the file as comma-separated CSV")
                return None
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        load.problems.append(f"{load.name}: the file is empty (no header row); {UPLOAD_HINT}")
        return None
    except (pd.errors.ParserError, ValueError) as exc:
        load.problems.append(f"{load.name}: cannot be parsed as CSV ({_clip(str(exc))})")
        return None


def _read_parquet(data: bytes, load: LandingLoad) -> pd.DataFrame | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(data) < 12 or data[-4:] != _PARQUET_MAGIC:
        load.problems.append(
            f"{load.name}: truncated Parquet: the file starts like Parquet but its footer is "
            f"missing ({len(data):,} bytes); the upload was probably cut off: upload the "
            "complete file")
        return None
    try:
        return pq.read_table(io.BytesIO(data)).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        load.problems.append(f"{load.name}: cannot be read as Parquet ({_clip(str(exc))})")
        return None


def _read_json_lines(data: bytes, load: LandingLoad) -> pd.DataFrame | None:
    records: list[dict[str, Any]] = []
    for number, line in enumerate(_decode(data, load).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            load.problems.append(
                f"{load.name}: line {number} is not valid JSON ({exc.msg} at column "
                f"{exc.colno}); JSON Lines needs one JSON object per line")
            return None
        if not isinstance(record, dict):
            load.problems.append(
                f"{load.name}: line {number} is a JSON {type(record).__name__}, not an object; "
                "JSON Lines needs one JSON object per line")
            return None
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_json_array(data: bytes, load: LandingLoad) -> pd.DataFrame | None:
    try:
        records = json.loads(_decode(data, load))
    except json.JSONDecodeError as exc:
        load.problems.append(
            f"{load.name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
        return None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        load.problems.append(
            f"{load.name}: a JSON file must hold a list of objects, one per title; "
            f"{UPLOAD_HINT}")
        return None
    return pd.DataFrame.from_records(records)


def _blank_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Nulls in text columns become '' (as CSV gives them); non-text values are left for the
    suite to report."""
    frame = frame.copy()
    for column in TEXT_COLUMNS:
        if column in frame.columns:
            values = frame[column]
            if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
                frame[column] = values.fillna("")
            else:
                values = values.astype(object)
                frame[column] = values.where(values.notna(), "")
    return frame


def integer_years(values: pd.Series) -> pd.Series:
    """Years as float64, NaN where a value is not an integer (text, fraction, inf, huge)."""
    year = pd.to_numeric(values, errors="coerce").astype("float64")
    # NaN, inf, fractions ("2020.5") and values past int64 are not integer years: casting
    # them would raise a raw pandas error, truncate silently, or overflow.
    is_int = np.isfinite(year) & (year == np.floor(year)) & (year.abs() < 2**53)
    return year.where(is_int)


def accepted_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A batch that passed its suite, in storable form: text columns as strings, `year` as
    int64, extra columns kept as strings (they may hold anything JSON had)."""
    out = frame.copy()
    for column in out.columns:
        if column == "year":
            out[column] = integer_years(out[column]).astype("int64")
        else:
            values = out[column].astype(object)
            out[column] = values.where(values.notna(), "").map(str).astype(str)
    return out


def read_titles(data: bytes, name: str) -> pd.DataFrame:
    """Parse a landing file into a titles table with checked columns; raise on any problem.

    The strict reader for the command-line trainers; the pipeline uses `load_landing_file`
    and the batch suite, which report instead of raising.
    """
    load = load_landing_file(data, name)
    if load.problems:
        raise LandingFileError(load.problems[0])
    if load.undecodable_bytes:
        raise LandingFileError(load.encoding_note)
    if load.missing_columns:
        raise LandingFileError(
            f"{name}: missing column(s) {', '.join(load.missing_columns)}; a landing file needs "
            f"{', '.join(REQUIRED_COLUMNS)} (genres separated by '{TAG_SEPARATOR}')"
        )
    frame = load.frame
    year = integer_years(frame["year"])
    if year.isna().any():
        bad = frame.loc[year.isna(), "id"].head(5).tolist()
        raise LandingFileError(f"{name}: 'year' is not an integer for ids {bad}")
    return frame.assign(year=year.astype("int64"))


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
