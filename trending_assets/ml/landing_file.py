"""Reading landing files: format detection (CSV, Parquet, JSON Lines, JSON; gzip or not),
a streaming read bounded by `LandingLimits`, and a loaded frame with what was wrong with it.

The training table and the splits built from the accepted batches are in dataset.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from trending_assets.ml.landing_stream import CutOff, ExpandedBytes, Utf8Text
from trending_assets.ml.limits import LandingLimitExceeded, LandingLimits, configured_limits

REQUIRED_COLUMNS = ("id", "title", "kind", "description", "genres", "year", "source")
TEXT_COLUMNS = ("id", "title", "kind", "description", "genres", "source")
TAG_SEPARATOR = "|"
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
    limit_exceeded: str | None = None  # the data.landing_limits key the file went over

    @property
    def readable(self) -> bool:
        return not self.problems

    @property
    def missing_columns(self) -> list[str]:
        return [c for c in REQUIRED_COLUMNS if c not in self.frame.columns]


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_landing_file(data: bytes, name: str, limits: LandingLimits | None = None, *,
                      size_bytes: int | None = None, sha256: str | None = None) -> LandingLoad:
    """Read a landing file (CSV, Parquet, JSON Lines; optionally gzip) without ever raising.

    The format comes from the content (magic bytes, first character) and the extension
    only breaks ties; a disagreement is noted. Text is decoded as UTF-8; undecodable
    bytes become U+FFFD and are counted, so the suite can name the rows that carry them.
    Decompression, decoding and parsing stream under `limits` (None: the configured ones):
    a file over one is reported
    as a problem naming the limit, having held at most about that much in memory.
    `size_bytes` and `sha256` describe the stored file when `data` is only its start (a
    file over `max_expanded_bytes` is not read whole).
    """
    limits = limits or configured_limits()
    load = LandingLoad(name=name, sha256=sha256 or content_sha256(data),
                       size_bytes=len(data) if size_bytes is None else size_bytes)
    try:
        if load.size_bytes > limits.max_expanded_bytes:
            raise LandingLimitExceeded("max_expanded_bytes", limits.max_expanded_bytes,
                                       f"the file is {load.size_bytes:,} bytes")
        _read_into(load, data, limits)
    except LandingLimitExceeded as exc:
        load.frame = pd.DataFrame()
        load.limit_exceeded = exc.limit
        load.problems.append(f"{name}: {exc}")
    except CutOff as exc:
        load.frame = pd.DataFrame()
        load.problems.append(
            f"{name}: starts like a gzip file but cannot be decompressed ({_clip(str(exc))});"
            " the upload was probably cut off: upload the complete file")
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


_ROWS_PER_CHUNK = 10_000  # CSV rows parsed per step, so the row limit is checked as it goes


def _read_into(load: LandingLoad, data: bytes, limits: LandingLimits) -> None:
    name = load.name
    if not data.strip():
        load.problems.append(f"{name}: the file is empty ({len(data)} bytes); {UPLOAD_HINT} "
                             "with a header row")
        return
    stem = name
    source: BinaryIO = io.BytesIO(data)
    if data[:2] == _GZIP_MAGIC:
        source = gzip.GzipFile(fileobj=source, mode="rb")
        load.compression = "gzip"
        if stem.lower().endswith(".gz"):
            stem = stem[:-3]
    raw = ExpandedBytes(source, limits)
    head = raw.head()
    if load.compression and not head.strip() and raw.at_end():
        load.problems.append(f"{name}: the file is empty (a gzip file with nothing inside); "
                             f"{UPLOAD_HINT} with a header row")
        return
    fmt, not_table = _sniff(head)
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
    if fmt == "parquet":
        frame = _read_parquet(raw.read(), load, limits)
    else:
        # A JSON array may be one line; CSV and JSON Lines rows are lines.
        raw.check_lines = fmt in ("csv", "jsonl")
        text = Utf8Text(raw, load)
        reader = {"csv": _read_csv, "jsonl": _read_json_lines, "json": _read_json_array}[fmt]
        frame = reader(text, load, limits)
        text.finish()
    if frame is None:
        return
    frame.columns = [str(c).strip() for c in frame.columns]
    load.extra_columns = [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    if load.extra_columns:
        load.notes.append(
            f"{name}: extra column(s) {', '.join(load.extra_columns)} are not part of the "
            "landing format; accepted and kept, not used for training")
    load.frame = _blank_nulls(frame)


def _sniff(head: bytes) -> tuple[str | None, str | None]:
    """(format, None) for a table, or (None, what the content is) for anything else."""
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


def _check_rows(rows: int, limits: LandingLimits) -> None:
    if rows > limits.max_rows:
        raise LandingLimitExceeded("max_rows", limits.max_rows,
                                   f"the file has more than {limits.max_rows:,} data rows")


def _check_fields(frame: pd.DataFrame, limits: LandingLimits) -> None:
    for column in frame.columns:
        longest = frame[column].map(lambda v: len(v) if isinstance(v, str) else 0).max()
        if longest > limits.max_field_chars:
            raise LandingLimitExceeded(
                "max_field_chars", limits.max_field_chars,
                f"a value in column {str(column)!r} has {int(longest):,} characters")


def _read_csv(text: Utf8Text, load: LandingLoad, limits: LandingLimits) -> pd.DataFrame | None:
    # Another delimiter shows in the header before any row can fail to parse.
    header = text.first_line()
    required = set(REQUIRED_COLUMNS)
    if len({f.strip().strip('"') for f in header.split(",")} & required) < 3:
        for delimiter, label in _DELIMITERS:
            if len({f.strip().strip('"') for f in header.split(delimiter)} & required) >= 3:
                load.problems.append(
                    f"{load.name}: columns are separated by {label} ({delimiter!r}), not commas "
                    f"(header: {_clip(header, 80)!r}); save the file as comma-separated CSV")
                return None
    chunks, rows = [], 0
    try:
        with pd.read_csv(text, dtype=str, keep_default_na=False,
                         chunksize=_ROWS_PER_CHUNK) as parts:
            for part in parts:
                rows += len(part)
                _check_rows(rows, limits)
                _check_fields(part, limits)
                chunks.append(part)
    except pd.errors.EmptyDataError:
        load.problems.append(f"{load.name}: the file is empty (no header row); {UPLOAD_HINT}")
        return None
    except (pd.errors.ParserError, ValueError) as exc:
        if isinstance(exc, LandingLimitExceeded):
            raise
        load.problems.append(f"{load.name}: cannot be parsed as CSV ({_clip(str(exc))})")
        return None
    if not chunks:  # a header and no rows
        return pd.read_csv(io.StringIO(header), dtype=str, keep_default_na=False)
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]


def _read_parquet(data: bytes, load: LandingLoad,
                  limits: LandingLimits) -> pd.DataFrame | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(data) < 12 or data[-4:] != _PARQUET_MAGIC:
        load.problems.append(
            f"{load.name}: truncated Parquet: the file starts like Parquet but its footer is "
            f"missing ({len(data):,} bytes); the upload was probably cut off: upload the "
            "complete file")
        return None
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        meta = parquet.metadata
        _check_rows(meta.num_rows, limits)
        # Parquet compresses too: its own sizes say what decoding it would hold.
        expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if expanded > limits.max_expanded_bytes:
            raise LandingLimitExceeded(
                "max_expanded_bytes", limits.max_expanded_bytes,
                f"its columns hold {expanded:,} bytes once decoded")
        frame = parquet.read().to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, LandingLimitExceeded):
            raise
        load.problems.append(f"{load.name}: cannot be read as Parquet ({_clip(str(exc))})")
        return None
    _check_fields(frame, limits)
    return frame


def _read_json_lines(text: Utf8Text, load: LandingLoad,
                     limits: LandingLimits) -> pd.DataFrame | None:
    records: list[dict[str, Any]] = []
    number = 0
    while line := text.readline():
        number += 1
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
        _check_rows(len(records), limits)
    frame = pd.DataFrame.from_records(records)
    _check_fields(frame, limits)
    return frame


def _read_json_array(text: Utf8Text, load: LandingLoad,
                     limits: LandingLimits) -> pd.DataFrame | None:
    try:
        records = json.loads(text.read())
    except json.JSONDecodeError as exc:
        load.problems.append(
            f"{load.name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
        return None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        load.problems.append(
            f"{load.name}: a JSON file must hold a list of objects, one per title; "
            f"{UPLOAD_HINT}")
        return None
    _check_rows(len(records), limits)
    frame = pd.DataFrame.from_records(records)
    _check_fields(frame, limits)
    return frame


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


def read_titles(data: bytes, name: str, limits: LandingLimits | None = None) -> pd.DataFrame:
    """Parse a landing file into a titles table with checked columns; raise on any problem.

    The strict reader for the command-line trainers; the pipeline uses `load_landing_file`
    and the batch suite, which report instead of raising.
    """
    load = load_landing_file(data, name, limits)
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
