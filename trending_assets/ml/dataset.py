"""Titles tables: reading landing files, building the training table, stable splits."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from trending_assets.ml.limits import (
    SNIFF_BYTES,
    LandingLimitExceeded,
    LandingLimits,
    configured_limits,
)
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
    except _CutOff as exc:
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


_CHUNK = 1 << 16  # bytes decompressed and decoded per step
_ROWS_PER_CHUNK = 10_000  # CSV rows parsed per step, so the row limit is checked as it goes


class _CutOff(Exception):
    """The gzip stream is damaged or ends early."""


class _ExpandedBytes(io.RawIOBase):
    """The file's bytes after decompression, counted as they are read: past
    `max_expanded_bytes`, or (once `check_lines` is set) a line past `max_line_bytes`, it
    raises LandingLimitExceeded before holding more."""

    def __init__(self, source: BinaryIO, limits: LandingLimits) -> None:
        self.source, self.limits = source, limits
        self.total = 0
        self.line_run = 0  # bytes since the last newline
        self.check_lines = False
        self.pushback = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pushback:
            chunk, self.pushback = self.pushback[: len(buffer)], self.pushback[len(buffer):]
        else:
            chunk = self._next(min(len(buffer), _CHUNK))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _next(self, size: int) -> bytes:
        try:
            chunk = self.source.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise _CutOff(str(exc)) from exc
        self.total += len(chunk)
        if self.total > self.limits.max_expanded_bytes:
            raise LandingLimitExceeded(
                "max_expanded_bytes", self.limits.max_expanded_bytes,
                f"the content is larger than {self.limits.max_expanded_bytes:,} bytes "
                "after decompression")
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            self.line_run += len(chunk)
        else:
            self._check_line(max(self.line_run + len(lines[0]), *map(len, lines[1:])))
            self.line_run = len(lines[-1])
        self._check_line(self.line_run)
        return chunk

    def _check_line(self, length: int) -> None:
        if self.check_lines and length > self.limits.max_line_bytes:
            raise LandingLimitExceeded(
                "max_line_bytes", self.limits.max_line_bytes,
                f"a line is longer than {self.limits.max_line_bytes:,} bytes")

    def head(self) -> bytes:
        """The first SNIFF_BYTES bytes; the next reads give them again."""
        parts, got = [self.pushback], len(self.pushback)
        while got < SNIFF_BYTES and (chunk := self._next(SNIFF_BYTES - got)):
            parts.append(chunk)
            got += len(chunk)
        self.pushback = b"".join(parts)
        return self.pushback

    def at_end(self) -> bool:
        """Whether nothing follows what was read (and pushed back) so far."""
        more = self._next(1)
        self.pushback += more
        return not more


class _Utf8Text(io.TextIOBase):
    """The text of an _ExpandedBytes stream, decoded as it is read: undecodable bytes become
    U+FFFD and are counted, and the first is located (for `LandingLoad.encoding_note`)."""

    def __init__(self, raw: _ExpandedBytes, load: LandingLoad) -> None:
        self.raw, self.load = raw, load
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self.strict = codecs.getincrementaldecoder("utf-8")()
        self.first_bad: tuple[bytes, int] | None = None  # the byte and its line
        self.lines_before = 0
        self.buffer = ""
        self.done = False

    def readable(self) -> bool:
        return True

    def _decode_next(self) -> str | None:
        """The text of the next chunk ('' while a character is split), None at the end."""
        if self.done:
            return None
        chunk = self.raw.read(_CHUNK)
        self.done = not chunk
        text = self.decoder.decode(chunk, final=self.done)
        self.load.undecodable_bytes += text.count("\ufffd")
        if self.first_bad is None:
            pending = self.strict.getstate()[0]
            try:
                self.strict.decode(chunk, final=self.done)
            except UnicodeDecodeError as exc:
                joined = pending + chunk
                line = self.lines_before + joined.count(b"\n", 0, exc.start) + 1
                self.first_bad = (joined[exc.start : exc.start + 1], line)
            self.lines_before += chunk.count(b"\n")
        return text

    def _more(self) -> bool:
        text = self._decode_next()
        if text is None:
            return False
        self.buffer += text
        return True

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            parts = [self.buffer]
            while (text := self._decode_next()) is not None:
                parts.append(text)
            self.buffer = ""
            return "".join(parts)
        while len(self.buffer) < size and self._more():
            pass
        text, self.buffer = self.buffer[:size], self.buffer[size:]
        return text

    def readline(self, size: int | None = -1) -> str:
        while "\n" not in self.buffer and self._more():
            pass
        end = self.buffer.find("\n") + 1 or len(self.buffer)
        text, self.buffer = self.buffer[:end], self.buffer[end:]
        return text

    def first_line(self) -> str:
        """The first non-blank line, left to be read again."""
        while "\n" not in self.buffer.lstrip() and self._more():
            pass
        return self.buffer.lstrip().split("\n", 1)[0].strip()

    def finish(self) -> None:
        """Read to the end (counting what is left) and write the encoding note."""
        self.buffer = ""
        while self._decode_next() is not None:
            pass
        if self.first_bad is not None and self.load.undecodable_bytes:
            byte, line = self.first_bad
            self.load.encoding_note = (
                f"{self.load.name}: not valid UTF-8: {self.load.undecodable_bytes} undecodable "
                f"byte sequence(s), the first is 0x{byte.hex()} on line {line} "
                f"({byte.decode('latin-1')!r} if the file is Latin-1); re-export the file as "
                "UTF-8")


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
    raw = _ExpandedBytes(source, limits)
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
        text = _Utf8Text(raw, load)
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


def _read_csv(text: _Utf8Text, load: LandingLoad, limits: LandingLimits) -> pd.DataFrame | None:
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


def _read_json_lines(text: _Utf8Text, load: LandingLoad,
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


def _read_json_array(text: _Utf8Text, load: LandingLoad,
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
