"""Data quality gates: landing loader, batch suite and quarantine, training gates, drift.

The bad inputs are real files written to disk by `write_corpus` (one per case), ingested
through the real Dagster assets beside a good batch that is then trained on.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import AssetKey, AssetSelection, instance_for_test

from resources.quarantine import QuarantineStore, TrainingDataBaseline
from resources.registry import ModelRegistry
from resources.storage import LocalArtifactStore
from tests.conftest import write_test_configs
from tests.helpers import REPO
from tests.helpers.pipeline import ingest, stored_table, train
from trending_assets.automation.landing import landing_changes
from trending_assets.automation.requests import RequestRejected, RetrainRequest, request_run
from trending_assets.checks.batch_quality import assess_batch
from trending_assets.checks.data_quality import batch_limits
from trending_assets.definitions import build_definitions
from trending_assets.ml import drift
from trending_assets.ml.dataset import build_training_table
from trending_assets.ml.landing_file import load_landing_file
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import Settings, load_settings

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) * 4
GOOD = "good.csv"


@dataclass(frozen=True)
class Case:
    outcome: str  # "quarantine", "warn" (accepted with a warning) or "accept"
    message: str  # regex one reason (quarantine) or warning (warn) must match


def _csv(frame: pd.DataFrame, **kwargs) -> bytes:
    return frame.to_csv(index=False, **kwargs).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_corpus(folder: Path, netflix: pd.DataFrame) -> dict[str, Case]:
    """The good batch and one real file per bad input, each from its own slice of titles."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = iter(range(0, len(netflix), 40))

    def part(n: int = 40) -> pd.DataFrame:
        start = next(rows)
        return netflix.iloc[start:start + n].reset_index(drop=True).copy()

    good = netflix.iloc[1000:1700].reset_index(drop=True)
    files: dict[str, tuple[bytes, Case]] = {GOOD: (_csv(good), Case("accept", ""))}

    files["empty.csv"] = (b"", Case("quarantine", r"empty\.csv: the file is empty \(0 bytes\)"))
    files["header_only.csv"] = (
        b"id,title,kind,description,genres,year,source\n",
        Case("quarantine", r"data rows in the file: 0 rows: the file has a header but no data"))
    parquet = _parquet(part())
    files["truncated.parquet"] = (
        parquet[: len(parquet) // 2],
        Case("quarantine", r"truncated Parquet: the file starts like Parquet but its footer"))
    files["missing_column.csv"] = (
        _csv(part().drop(columns=["year"])),
        Case("quarantine", r"required columns: missing: year \(found: id, title, kind, "))
    extra = part().assign(rating="TV-MA", country="Spain")
    files["extra_columns.csv"] = (
        _csv(extra), Case("warn", r"extra column\(s\) rating, country .*accepted and kept"))
    files["semicolons.csv"] = (
        _csv(part(), sep=";"),
        Case("quarantine", r"columns are separated by semicolons \(';'\), not commas"))
    latin = part()
    latin_id = latin.loc[3, "id"]
    latin.loc[3, "title"] = "Amélie à Paris"
    files["latin1.csv"] = (
        latin.to_csv(index=False).encode("latin-1", errors="replace"),
        Case("quarantine", rf"text is valid UTF-8: 1 of 40 rows with bytes that are not UTF-8 "
                           rf".*e\.g\. {re.escape(latin_id)}: title 'Am\ufffdlie"))
    huge = part()
    huge_id = huge.loc[7, "id"]
    huge.loc[7, "description"] = ("a very long synopsis " * 100_000)[:2_000_000]
    files["huge_synopsis.csv"] = (
        _csv(huge),
        Case("quarantine", rf"synopsis length: 1 of 40 synopses out of range \(expected "
                           rf"10–5,000 characters\); e\.g\. {re.escape(huge_id)}: 2,000,000 chars"))
    within = part()
    within_id = within.loc[5, "id"]
    within = pd.concat([within, within.iloc[[5]].assign(title="Second Version")],
                       ignore_index=True)
    files["dup_within.csv"] = (
        _csv(within),
        Case("warn", rf"ids unique within the batch: 2 rows share an id \(the last row with "
                     rf"an id wins\).*e\.g\. {re.escape(within_id)}"))
    across = good.iloc[:25].assign(title=lambda d: "Re-released: " + d["title"])
    files["dup_across.csv"] = (_csv(across), Case("accept", ""))
    unknown = part()
    unknown.loc[0, "genres"] = "Space Westerns|Dramas"
    unknown.loc[1, "genres"] = "Telenovelas"
    files["unknown_tags.csv"] = (
        _csv(unknown),
        Case("warn", r"genre tags known to the taxonomy: 2 of 40 rows with tags not in the "
                     r"taxonomy .*'Space Westerns'.*'Telenovelas'"))
    only = part().assign(genres="International Movies|Movies")
    files["only_non_genre_tags.csv"] = (
        _csv(only),
        Case("quarantine", r"rows with a canonical genre: 40 of 40 rows \(100\.0%\) have no "
                           r"canonical genre.*'International Movies\|Movies'"))
    files["image.csv"] = (
        PNG, Case("quarantine", r"image\.csv: not a table: the content is a PNG image"))
    bad = part().astype({"year": object})
    bad.loc[2, "kind"] = "film"
    bad.loc[4, "year"] = 1700
    bad.loc[6, "year"] = "twenty"
    bad.loc[8, "description"] = "   "
    files["bad_values.csv"] = (
        _csv(bad), Case("quarantine", rf"known kind: 1 of 40 kinds not in set .*"
                                      rf"{re.escape(bad.loc[2, 'id'])}: 'film'"))
    files["titles.parquet"] = (_parquet(part()), Case("accept", ""))
    files["titles.jsonl"] = (
        part().to_json(orient="records", lines=True).encode(), Case("accept", ""))
    files["parquet_named.csv"] = (
        _parquet(part()),
        Case("warn", r"the name says CSV but the content is Parquet; read as Parquet"))
    lines = part(5).to_json(orient="records", lines=True).splitlines()
    lines[2] = lines[2][:30]
    files["broken.jsonl"] = (
        ("\n".join(lines) + "\n").encode(),
        Case("quarantine", r"line 3 is not valid JSON"))
    files["truncated.csv.gz"] = (
        gzip.compress(_csv(part()))[:200],
        Case("quarantine", r"starts like a gzip file but cannot be decompressed"))
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: case for name, (_, case) in files.items()}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.from_config(yaml.safe_load((REPO / "configs" / "genres.yaml").read_text()))


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings("local", REPO / "configs")


# --- loader and batch suite, file by file -------------------------------------------------


def test_every_bad_file_gives_a_specific_message(tmp_path, netflix, taxonomy, settings):
    corpus = write_corpus(tmp_path, netflix)
    assert len(corpus) >= 20
    limits = batch_limits(settings)
    for name, case in corpus.items():
        assessment = assess_batch((tmp_path / name).read_bytes(), name, taxonomy, limits)
        reasons, warnings = assessment.reasons, assessment.warnings
        if case.outcome == "quarantine":
            assert assessment.quarantined, name
            assert any(re.search(case.message, r) for r in reasons), (name, reasons)
            record = assessment.record()
            assert record["file"] == name and record["reasons"] == reasons
        else:
            assert not assessment.quarantined, (name, reasons)
            assert reasons == []
            if case.outcome == "warn":
                assert any(re.search(case.message, w) for w in warnings), (name, warnings)
            assert len(assessment.accepted()) == assessment.rows > 0


def test_bad_values_name_each_offending_row(tmp_path, netflix, taxonomy, settings):
    corpus = write_corpus(tmp_path, netflix)
    assert corpus["bad_values.csv"].outcome == "quarantine"
    frame = pd.read_csv(tmp_path / "bad_values.csv", keep_default_na=False, dtype=str)
    ids = frame["id"].tolist()
    assessment = assess_batch((tmp_path / "bad_values.csv").read_bytes(), "bad_values.csv",
                              taxonomy, batch_limits(settings))
    failed = {o.summary: o for o in assessment.failures}
    assert set(failed) == {"known kind", "year is an integer", "year in range",
                           "synopsis not empty"}
    assert failed["known kind"].sample == [f"{ids[2]}: 'film'"]
    assert failed["year in range"].sample == [f"{ids[4]}: 1700"]
    assert failed["year in range"].expected == "1900–2100"
    assert failed["year is an integer"].sample == [f"{ids[6]}: 'twenty'"]
    assert failed["synopsis not empty"].sample == [f"{ids[8]}: empty"]
    md = assessment.suite.to_markdown()
    assert "4 of 14 expectations FAILED" in md.splitlines()[0]


def test_format_is_detected_by_content(netflix):
    frame = netflix.head(3)
    as_csv = load_landing_file(_csv(frame), "x.parquet")
    assert as_csv.format == "csv" and as_csv.notes and "the name says Parquet" in as_csv.notes[0]
    assert load_landing_file(_parquet(frame), "x").format == "parquet"
    jsonl = load_landing_file(frame.to_json(orient="records", lines=True).encode(), "x.txt")
    assert jsonl.format == "jsonl"
    assert jsonl.frame["id"].tolist() == frame["id"].tolist()
    array = load_landing_file(frame.to_json(orient="records").encode(), "x.json")
    assert array.format == "json" and len(array.frame) == 3
    zipped = load_landing_file(gzip.compress(_parquet(frame)), "x.parquet.gz")
    assert (zipped.format, zipped.compression) == ("parquet", "gzip")
    for data, what in ((b"%PDF-1.7\n", "PDF"), (b"PK\x03\x04rest", "ZIP"),
                       (b"\xff\xfei\x00d\x00", "UTF-16"), (b"id,title\x00\x01", "NUL")):
        load = load_landing_file(data, "f.csv")
        assert load.problems and what in load.problems[0] and load.frame.empty


def test_column_types_are_checked(netflix, taxonomy, settings):
    frame = netflix.head(20).reset_index(drop=True)
    typed = _parquet(frame.assign(title=list(range(20))))  # an int64 column in Parquet
    assessment = assess_batch(typed, "typed.parquet", taxonomy, batch_limits(settings))
    assert assessment.load.format == "parquet" and assessment.quarantined
    (failure,) = [o for o in assessment.failures if o.summary == "text columns hold text"]
    assert failure.observed == "20 of 20 rows with non-text values"
    assert f"{frame.loc[0, 'id']}: title is int 0" in failure.sample
    records = frame.to_dict("records")
    records[3]["description"] = 12345  # one number among texts, in JSON Lines
    data = "\n".join(json.dumps(r) for r in records).encode()
    assessment = assess_batch(data, "mixed.jsonl", taxonomy, batch_limits(settings))
    (failure,) = [o for o in assessment.failures if o.summary == "text columns hold text"]
    assert failure.sample == [f"{frame.loc[3, 'id']}: description is int 12345"]


# --- drift ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netflix_table(taxonomy) -> pd.DataFrame:
    raw = pd.read_csv(REPO / "trending_assets" / "data" / "netflix_titles_genres.csv.gz",
                      keep_default_na=False)
    table, _, _ = build_training_table([raw], taxonomy)
    return table


def _drift(current: pd.DataFrame, baseline: pd.DataFrame) -> drift.DriftReport:
    return drift.compare(drift.profile_table(current), drift.profile_table(baseline))


def test_drift_is_zero_for_the_same_data_and_small_for_growth(netflix_table):
    same = _drift(netflix_table, netflix_table)
    assert same.max_genre_psi[1] == 0 and same.length_psi == 0
    assert same.vocabulary_novelty == 0 and same.genre_js == 0
    grown = _drift(netflix_table, netflix_table.sample(frac=0.9, random_state=2))
    levels = {"genre_psi": (0.1, 0.25), "length_psi": (0.1, 0.25),
              "vocabulary_novelty": (0.02, 0.05)}
    assert drift.overall_level(drift.findings(grown, levels)) == "ok"


def test_drift_levels_on_real_shifts(netflix_table):
    levels = {"genre_psi": (0.1, 0.25), "length_psi": (0.1, 0.25),
              "vocabulary_novelty": (0.02, 0.05)}
    tv = netflix_table[netflix_table["kind"] == "tv"]
    movies = netflix_table[netflix_table["kind"] == "movie"]
    report = _drift(tv, movies)
    genre, psi = report.max_genre_psi
    assert psi > 0.25 and genre == "Crime & Mystery"
    found = {f.metric: f for f in drift.findings(report, levels)}
    assert found["genre_psi"].level == "error"
    assert "largest for Crime & Mystery" in found["genre_psi"].detail
    longer = netflix_table.assign(description=netflix_table["description"] + " " +
                                  netflix_table["description"])
    long_report = _drift(longer, netflix_table)
    assert long_report.length_psi > 0.25
    assert long_report.mean_length[1] > 1.9 * long_report.mean_length[0]
    ood = pd.read_csv(REPO / "trending_assets" / "data" / "streaming_ood_titles_genres.csv.gz",
                      keep_default_na=False).head(3000).assign(labels="Drama")
    novelty = _drift(ood, netflix_table).vocabulary_novelty
    assert novelty > 0.02
    shifted = _drift(netflix_table, netflix_table.assign(labels="Drama"))
    assert shifted.new_genres and "Comedy" in shifted.new_genres


def test_drift_profile_json_roundtrip(netflix_table):
    profile = drift.profile_table(netflix_table, sample_rows=500)
    assert profile.sampled_rows == 500 and profile.rows == len(netflix_table)
    again = drift.DriftProfile.from_json(json.loads(json.dumps(profile.to_json())))
    assert again == profile
    with pytest.raises(ValueError, match="format"):
        drift.DriftProfile.from_json({**profile.to_json(), "format": 99})


# --- quarantine records -----------------------------------------------------------------


def test_quarantine_store_put_replace_clear(tmp_path):
    store = QuarantineStore(LocalArtifactStore(tmp_path))
    uri = store.put({"file": "a/b.csv", "sha256": "1", "reasons": ["bad"]})
    assert uri.endswith("quarantine/a/b.csv.json")
    assert store.active()["a/b.csv"]["reasons"] == ["bad"]
    store.put({"file": "a/b.csv", "sha256": "2", "reasons": ["worse"]})
    assert store.get("a/b.csv")["sha256"] == "2"
    assert [r["sha256"] for r in store.history("a/b.csv")] == ["1"]
    assert store.clear("a/b.csv", cleared_by_sha256="3")
    assert store.get("a/b.csv") is None and store.active() == {}
    assert not store.clear("a/b.csv")
    assert sorted(r["sha256"] for r in store.history("a/b.csv")) == ["1", "2"]
    assert not (tmp_path / "quarantine" / "a" / "b.csv.json").exists()


def test_nested_files_are_listed_even_in_a_folder_called_history(tmp_path):
    store = QuarantineStore(LocalArtifactStore(tmp_path))
    for name in ("history/bad.csv", "sub/bad.csv", "bad.csv"):
        store.put({"file": name, "sha256": "1", "reasons": [f"{name} is bad"]})
    store.put({"file": "bad.csv", "sha256": "2", "reasons": ["bad.csv is worse"]})
    assert sorted(store.active()) == ["bad.csv", "history/bad.csv", "sub/bad.csv"]
    assert [r["sha256"] for r in store.history("bad.csv")] == ["1"]
    assert store.history("history/bad.csv") == []
    # an archive written under history/ by earlier versions is history, not active
    legacy = tmp_path / "quarantine" / "history" / "old.csv.20261101T000000000000Z.json"
    legacy.write_text(json.dumps({"file": "old.csv", "sha256": "0", "cleared_at": "then"}))
    assert "old.csv" not in store.active()
    assert [r["sha256"] for r in store.history("old.csv")] == ["0"]


# --- the assets end to end --------------------------------------------------------------


@pytest.mark.e2e  # trains the graph twice: too slow for make test-fast
def test_bad_batches_quarantined_good_batch_trained_nothing_lost(tmp_path, tiny_bert_dir,
                                                                 netflix):
    root = tmp_path / "root"
    landing = root / "landing"
    corpus = write_corpus(landing, netflix)
    before = {p.name: p.read_bytes() for p in landing.iterdir()}
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir)
    settings = load_settings("local", config_dir)
    defs = build_definitions(settings)
    artifacts = LocalArtifactStore(root / "artifacts")
    landing_store = LocalArtifactStore(landing)
    quarantine = QuarantineStore(artifacts)
    registry = ModelRegistry(artifacts)
    with instance_for_test() as instance:
        changes = landing_changes(landing_store, instance)
        assert {c.key for c in changes} == set(corpus) and {c.reason for c in changes} == {"new"}
        # The good batch landed first; the others after it (dup_across.csv must win).
        checks = ingest(defs, instance, landing_store, [GOOD, *sorted(set(corpus) - {GOOD})])
        assert landing_changes(landing_store, instance) == []

        bad = {n for n, c in corpus.items() if c.outcome == "quarantine"}
        assert set(quarantine.active()) == bad
        for name in bad:
            record = quarantine.get(name)
            assert record["file"] == name and record["reasons"]
            assert any(re.search(corpus[name].message, r) for r in record["reasons"])
            assert record["sha256"] == checks[name].metadata["content_sha256"].value
            assert not checks[name].passed and checks[name].severity.value == "ERROR"
            assert checks[name].metadata["quarantined"].value is True
        for name in set(corpus) - bad:
            assert checks[name].metadata["quarantined"].value is False
            assert checks[name].passed == (corpus[name].outcome == "accept"), name
        ui = checks["bad_values.csv"].metadata
        assert "| known kind | FAIL |" in ui["sample_offending_rows"].value
        assert "expect_column_values_to_be_in_set(kind)" in ui["results"].value
        # landing files are never touched
        assert {p.name: p.read_bytes() for p in landing.iterdir()} == before

        first = train(settings, instance)
        assert first.success
        evaluations = {c.check_name: c for c in first.get_asset_check_evaluations()}
        assert evaluations["training_data_quality"].passed
        assert evaluations["training_data_drift"].passed
        meta = {e.asset_key.to_user_string(): e.materialization.metadata
                for e in first.get_asset_materialization_events()}["training_data"]
        accepted = set(corpus) - bad
        assert set(meta["batches"].value) == accepted
        assert meta["batches"].value[0] == GOOD  # ingested first: later batches win over it
        assert meta["duplicate_ids_across_batches"].value == 25
        assert meta["duplicate_ids_within_batches"].value == 1
        assert meta["rows_with_unknown_tags"].value == 2
        for name in bad:
            assert name in meta["quarantined_batches"].value
        table = stored_table(root, first.run_id).set_index("id")
        good = pd.read_csv(landing / GOOD, keep_default_na=False)
        across = pd.read_csv(landing / "dup_across.csv", keep_default_na=False)
        assert table.loc[across["id"], "title"].str.startswith("Re-released: ").all()
        within = pd.read_csv(landing / "dup_within.csv", keep_default_na=False)
        assert table.loc[within["id"].iloc[-1], "title"] == "Second Version"
        unknown = pd.read_csv(landing / "unknown_tags.csv", keep_default_na=False)
        assert table.loc[unknown["id"][0], "labels"] == "Drama"  # known tag kept
        assert unknown["id"][1] not in table.index  # nothing known left: not trained on
        trained_ids = set(table.index)
        assert registry.versions("trending-now-xgboost") == [1]

        # A good file re-uploaded with bad content: a new version is quarantined, the
        # accepted one stays stored and in use.
        good_dir = root / "artifacts" / "assets" / "raw_titles" / GOOD
        accepted_version = json.loads((good_dir / "current.json").read_text())["version"]
        latin = good.copy()
        latin.loc[0, "title"] = "Café Society"
        (landing / GOOD).write_bytes(latin.to_csv(index=False).encode("latin-1", "replace"))
        # A quarantined file fixed and uploaded again under the same name.
        fixed = netflix.iloc[2000:2060]
        fixed.to_csv(landing / "missing_column.csv", index=False)
        changes = {c.key: c.reason for c in landing_changes(landing_store, instance)}
        assert changes == {GOOD: "changed", "missing_column.csv": "changed"}
        again = ingest(defs, instance, landing_store, sorted(changes))
        assert again[GOOD].metadata["quarantined"].value is True
        assert json.loads((good_dir / "current.json").read_text())["version"] == accepted_version
        assert (good_dir / accepted_version / "table.parquet").exists()
        assert again["missing_column.csv"].passed
        assert quarantine.get("missing_column.csv") is None
        assert quarantine.history("missing_column.csv")[0]["cleared_by_sha256"]
        assert set(quarantine.active()) == (bad - {"missing_column.csv"}) | {GOOD}

        data_only = AssetSelection.assets("training_data")
        second = train(settings, instance, selection=data_only)
        assert second.success
        table = stored_table(root, second.run_id)
        assert trained_ids <= set(table["id"])  # no previously accepted row is lost
        taxonomy = Taxonomy.from_config(yaml.safe_load((config_dir / "genres.yaml").read_text()))
        trained = set(second.get_asset_materialization_events()[0].materialization.metadata[
            "genres"].value)
        with_genre = {i for i, tags in zip(fixed["id"], fixed["genres"], strict=True)
                      if set(taxonomy.map_tags(tags.split("|"))[0]) & trained}
        assert len(with_genre) > 40
        assert set(table["id"]) & set(fixed["id"]) == with_genre  # the fixed batch is in
        baseline = TrainingDataBaseline(artifacts).accepted()
        assert baseline["version"] == second.run_id

        # Gates that fail block everything below training_data: the registry is unchanged.
        blocked = train(settings, instance, overrides={"data": {"min_rows": 100_000}})
        assert not blocked.success
        quality = {c.check_name: c for c in blocked.get_asset_check_evaluations()}
        assert not quality["training_data_quality"].passed
        assert (f"expect_table_row_count_to_be_between (observed {len(table)} rows, expected "
                ">= 100000 rows)") in quality["training_data_quality"].description
        assert {e.asset_key.to_user_string()
                for e in blocked.get_asset_materialization_events()} == {"training_data"}
        # A good batch that shifts the genre mix (documentaries from ~10% to ~35% of titles):
        # accepted on its own, but training_data drifts past the error level and is blocked.
        later = netflix.iloc[3000:]
        docs = later[later["genres"].str.contains("Documentaries")].head(400)
        docs.to_csv(landing / "documentaries.csv", index=False)
        assert ingest(defs, instance, landing_store, ["documentaries.csv"])[
            "documentaries.csv"].passed
        drifted = train(settings, instance)
        assert not drifted.success
        result = {c.check_name: c for c in drifted.get_asset_check_evaluations()}
        assert result["training_data_quality"].passed
        assert not result["training_data_drift"].passed
        assert result["training_data_drift"].severity.value == "ERROR"
        assert "genre_psi" in result["training_data_drift"].description
        assert "largest for Documentary" in result["training_data_drift"].description
        assert result["training_data_drift"].metadata["baseline_version"].value.startswith(
            second.run_id)
        assert registry.versions("trending-now-xgboost") == [1]
        assert TrainingDataBaseline(artifacts).accepted()["version"] == second.run_id
        # A later run that starts below training_data (a retrain request reusing the data
        # version, a selection in the UI) does not build on the stored version that failed.
        below = train(settings, instance, selection=AssetSelection.assets("data_splits"))
        assert not below.success
        (failure,) = below.get_step_failure_events()
        message = failure.event_specific_data.error.to_string()  # the cause: our message
        assert f"the stored training_data (run {drifted.run_id}) did not pass" in message
        assert "training_data_drift failed: " in message and "genre_psi" in message
        assert "materialize training_data again" in message
        assert not below.get_asset_materialization_events()
        # A retrain request reusing that data version is refused before any run starts.
        stored_version = instance.get_latest_materialization_event(
            AssetKey("training_data")).asset_materialization.metadata["data_version"].value
        reuse = RetrainRequest(reason="r", requested_by="t", data_version=stored_version)
        with pytest.raises(RequestRejected, match="did not pass its blocking checks"):
            request_run(reuse, "requests/reuse.json", "etag-1", instance)
        assert instance.get_latest_materialization_event(
            AssetKey("registered_xgboost_model")).run_id == first.run_id


# --- the benchmark ----------------------------------------------------------------------


def test_benchmark_reports_throughput_and_share(monkeypatch, capsys):
    from trending_assets.bench import validation

    def in_process(phase: str, rows: int, repeat: int) -> dict:
        return validation.worker(phase, rows, repeat)

    monkeypatch.setattr(validation, "_run_worker", in_process)
    validation.main(["--sizes", "1500", "3000", "--repeat", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.lstrip().startswith("1,500") for line in lines)
    last = json.loads(lines[-1])
    assert set(last["rows_per_s"]) == set(last["share_of_featurization"]) == {"1500", "3000"}
    assert all(v > 0 for v in last["rows_per_s"].values())
    assert all(v > 0 for v in last["share_of_featurization"].values())
    assert last["checks_peak_mb"]["3000"] > 0


def test_synthetic_rows_derive_from_real_ones(netflix):
    from trending_assets.bench.validation import synthetic_titles

    rows = synthetic_titles(netflix, 2000, seed=1)
    assert len(rows) == 2000 and rows["id"].is_unique
    assert rows["description"].nunique() > 1990
    assert set(rows["genres"]) <= set(netflix["genres"])
    assert np.isin(rows["kind"], ["movie", "tv"]).all()


@pytest.mark.e2e  # a `cli run` process
def test_cli_reports_quarantined_files_and_trains_on_nothing_else(tmp_path, tiny_bert_dir):
    root = tmp_path / "root"
    (root / "landing").mkdir(parents=True)
    (root / "landing" / "photo.csv").write_bytes(PNG)
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir)
    (tmp_path / "home").mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "APP_ENV": "local",
           "TRENDING_CONFIG_DIR": str(config_dir)}
    done = subprocess.run([sys.executable, "-m", "trending_assets.cli", "run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert "landing files ingested: none new" in out, out + done.stderr
    assert "landing files quarantined, not trained on" in out
    assert "  photo.csv: not a table: the content is a PNG image" in out
    # No accepted batch at all: training_data fails its gate and nothing is registered.
    assert "FAILED" in out and done.returncode == 1
    assert (root / "artifacts" / "quarantine" / "photo.csv.json").exists()
    assert not (root / "artifacts" / "registry").exists()
    assert (root / "landing" / "photo.csv").read_bytes() == PNG


def test_sensor_requests_new_and_changed_files_once(tmp_path, tiny_bert_dir, netflix):
    from dagster import build_sensor_context

    from resources.storage import ArtifactStoreResource

    root = tmp_path / "root"
    landing = root / "landing"
    landing.mkdir(parents=True)
    netflix.head(60).to_csv(landing / "a.csv", index=False)
    settings = load_settings("local", write_test_configs(tmp_path / "configs", root,
                                                         tiny_bert_dir))
    defs = build_definitions(settings)
    landing_sensor = defs.resolve_sensor_def("landing_sensor")  # as the code location has it
    resource = ArtifactStoreResource(uri=str(landing))
    with instance_for_test() as instance:
        def tick():
            return landing_sensor(build_sensor_context(instance=instance,
                                                       resources={"landing": resource}))

        first = tick()
        (request,) = first.run_requests
        assert request.partition_key == "a.csv" and request.run_key.startswith("a.csv@")
        assert first.dynamic_partitions_requests[0].partition_keys == ["a.csv"]
        ingest(defs, instance, LocalArtifactStore(landing), ["a.csv"])
        assert tick().run_requests == []
        netflix.iloc[60:120].to_csv(landing / "a.csv", index=False)  # re-uploaded, new content
        changed = tick()
        (again,) = changed.run_requests
        assert again.partition_key == "a.csv" and again.run_key != request.run_key
        assert changed.dynamic_partitions_requests == []  # the partition exists already
