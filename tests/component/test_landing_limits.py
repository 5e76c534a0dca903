"""Hostile landing files: read under data.landing_limits, quarantined naming the limit."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import instance_for_test, materialize

from resources.data_records import DataRecordsResource
from resources.landing_reader import read_bounded
from resources.quarantine import QuarantineStore
from resources.storage import ArtifactStoreResource, LocalArtifactStore
from tests.conftest import write_test_configs
from tests.helpers import REPO
from trending_assets.assets.ingestion import landing_files, raw_titles
from trending_assets.checks.batch_quality import assess_batch
from trending_assets.ml.landing_file import load_landing_file
from trending_assets.ml.limits import LandingLimits, configured_limits
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import SettingsResource, load_settings

HEADER = b"id,title,kind,description,genres,year,source\n"
ROW = b"1,A title,movie,A long enough synopsis of the film,Dramas,2020,netflix\n"
MB = 2**20


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.from_config(yaml.safe_load((REPO / "configs" / "genres.yaml").read_text()))


def gzip_of(chunks: list[bytes] | None = None, *, line_mb: int = 0) -> bytes:
    """A gzip file written chunk by chunk (a bomb is never held expanded here)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as archive:
        for chunk in chunks or []:
            archive.write(chunk)
        for _ in range(line_mb):
            archive.write(b"a" * MB)
    return out.getvalue()


def test_configured_limits_are_the_ones_read() -> None:
    assert load_settings("local").data.landing_limits == LandingLimits(
        max_expanded_bytes=64 * MB, max_rows=250_000, max_field_chars=4 * MB,
        max_line_bytes=8 * MB)


def configured(**values: int) -> LandingLimits:
    """The configured limits with a test's values on top (checked like the configuration)."""
    return LandingLimits.model_validate({**configured_limits().model_dump(), **values})


def test_gzip_bomb_of_one_line_is_quarantined_naming_the_limit(taxonomy: Taxonomy) -> None:
    bomb = gzip_of([HEADER], line_mb=40)  # about 40 KB stored
    assessment = assess_batch(bomb, "bomb.csv.gz", taxonomy)
    assert assessment.quarantined
    assert assessment.reasons[0].startswith(
        "bomb.csv.gz: over the limit data.landing_limits.max_line_bytes (8,388,608): a line "
        "is longer than 8,388,608 bytes")
    record = assessment.record()
    assert record["limit_exceeded"] == "max_line_bytes"
    assert record["compression"] == "gzip" and record["rows_read"] == 0


def test_valid_csv_bomb_stops_at_the_row_limit(taxonomy: Taxonomy) -> None:
    bomb = gzip_of([HEADER, ROW * 5000])
    limits = configured(max_rows=1000)
    assessment = assess_batch(bomb, "rows.csv.gz", taxonomy, read_limits=limits)
    assert assessment.quarantined
    assert "data.landing_limits.max_rows (1,000): the file has more than 1,000 data rows" in (
        assessment.reasons[0])
    assert assessment.load.limit_exceeded == "max_rows"
    # At the limit exactly, the same rows are read.
    at_limit = load_landing_file(gzip_of([HEADER, ROW * 1000]), "ok.csv.gz", limits)
    assert at_limit.problems == [] and len(at_limit.frame) == 1000


def test_expanded_bytes_are_counted_across_short_lines() -> None:
    limits = configured(max_expanded_bytes=MB, max_line_bytes=8192)
    load = load_landing_file(gzip_of([HEADER, ROW * 20_000]), "big.csv.gz", limits)
    assert load.limit_exceeded == "max_expanded_bytes"
    assert "the content is larger than 1,048,576 bytes after decompression" in load.problems[0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_a_huge_value_is_refused_in_every_format(fmt: str) -> None:
    frame = pd.DataFrame({"id": ["1", "2"], "title": ["a", "b"], "kind": ["movie", "tv"],
                          "description": ["short one", "x" * 5000], "genres": ["Dramas"] * 2,
                          "year": ["2020", "2021"], "source": ["netflix"] * 2})
    data = {"csv": lambda: frame.to_csv(index=False).encode(),
            "jsonl": lambda: frame.to_json(orient="records", lines=True).encode(),
            "json": lambda: frame.to_json(orient="records").encode(),
            "parquet": lambda: frame.to_parquet(index=False)}[fmt]()
    load = load_landing_file(data, f"f.{fmt}", configured(max_field_chars=4999))
    assert load.limit_exceeded == "max_field_chars", load.problems
    assert "a value in column 'description' has 5,000 characters" in load.problems[0]
    assert load_landing_file(data, f"f.{fmt}", configured(max_field_chars=5000)).problems == []


def test_a_stored_file_over_the_limit_is_hashed_not_kept(tmp_path: Path,
                                                         taxonomy: Taxonomy) -> None:
    data = HEADER + ROW * 20_000
    (tmp_path / "big.csv").write_bytes(data)
    stored = read_bounded(LocalArtifactStore(tmp_path), "big.csv", MB)
    assert (stored.size, stored.sha256, stored.data) == (
        len(data), hashlib.sha256(data).hexdigest(), b"")
    assessment = assess_batch(stored.data, "big.csv", taxonomy,
                              read_limits=configured(max_expanded_bytes=MB, max_line_bytes=MB),
                              size_bytes=stored.size, sha256=stored.sha256)
    assert assessment.load.limit_exceeded == "max_expanded_bytes"
    assert f"the file is {len(data):,} bytes" in assessment.reasons[0]
    assert assessment.record()["sha256"] == hashlib.sha256(data).hexdigest()
    assert read_bounded(LocalArtifactStore(tmp_path), "big.csv", len(data)).data == data


def test_raw_titles_quarantines_a_bomb_with_the_limit_in_its_record(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    root = tmp_path / "root"
    (root / "landing").mkdir(parents=True)
    (root / "landing" / "bomb.csv.gz").write_bytes(gzip_of([HEADER], line_mb=12))
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(landing_files.name, ["bomb.csv.gz"])
        result = materialize(
            [raw_titles], partition_key="bomb.csv.gz", instance=instance,
            resources={"settings": SettingsResource(config_dir=str(config_dir)),
                       "landing": ArtifactStoreResource(uri=str(root / "landing")),
                       "data_records": DataRecordsResource(
                           store=ArtifactStoreResource(uri=str(root / "artifacts")))})
    assert result.success
    record = QuarantineStore(LocalArtifactStore(root / "artifacts")).get("bomb.csv.gz")
    assert record is not None and record["limit_exceeded"] == "max_line_bytes"
    assert "data.landing_limits.max_line_bytes" in record["reasons"][0]


_PEAK = """
import gzip, io, sys
from pathlib import Path
from trending_assets.ml.landing_file import load_landing_file

def high_water_kb():
    line = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")]
    return int(line[0].split()[1])

out = io.BytesIO()
with gzip.GzipFile(fileobj=out, mode="wb") as archive:
    archive.write(b"id,title,kind,description,genres,year,source\\n")
    for _ in range(int(sys.argv[1])):
        archive.write(b"a" * 2**20)
data = out.getvalue()
Path("/proc/self/clear_refs").write_text("5")  # restart the high-water mark here
before = high_water_kb()
load = load_landing_file(data, "bomb.csv.gz")
print((high_water_kb() - before) // 1024, load.problems[0][:80])
"""


def test_reading_a_gzip_bomb_holds_no_more_than_the_line_limit() -> None:
    """Peak memory while reading a 150 MB one-line bomb, in a fresh process (the kernel's
    resident high-water mark, restarted just before the read)."""
    done = subprocess.run([sys.executable, "-c", _PEAK, "150"], capture_output=True,
                          text=True, check=True, cwd=REPO)
    grew_mb, problem = done.stdout.split(" ", 1)
    assert "max_line_bytes" in problem
    # The line limit is 8 MiB: the reader holds about that (plus parser buffers), never
    # the 150 MB the file expands to.
    assert 0 <= int(grew_mb) < 48, done.stdout


def test_quarantine_record_is_json(taxonomy: Taxonomy) -> None:
    record = assess_batch(gzip_of([HEADER], line_mb=9), "b.csv.gz", taxonomy).record()
    assert json.loads(json.dumps(record))["limit_exceeded"] == "max_line_bytes"
