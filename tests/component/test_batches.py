"""Which batches training_data is built from: the batch that landed last wins a repeated id
(never the file name), a failing training check names the batches behind it, and a retired
or removed batch leaves training at the next run."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import instance_for_test

from resources.io_manager import StoredAssetsResource
from resources.retirement import RetiredBatches
from resources.storage import ArtifactStoreResource, LocalArtifactStore
from tests.helpers import REPO
from tests.helpers.pipeline import DATA_ONLY, ingest, local_pipeline, stored_table, train
from tests.helpers.sensors import Ticker
from trending_assets.batches import StoredBatch, ingest_order, retire_command
from trending_assets.checks.data_quality import batch_contributions, training_limits
from trending_assets.checks.training_suite import validate_training_table
from trending_assets.ml.dataset import build_training_table
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.settings import LandingSensorSettings, load_settings

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def taxonomy() -> Taxonomy:
    return Taxonomy.from_config(yaml.safe_load((REPO / "configs/genres.yaml").read_text()))


def _land(path: Path, frame: pd.DataFrame, at: float) -> None:
    """Write a landing file with the given landing (modification) time."""
    frame.to_csv(path, index=False)
    os.utime(path, (at, at))


@pytest.mark.parametrize("fix_lands_last", [True, False])
def test_two_files_in_one_tick_the_later_landing_wins(tmp_path, tiny_bert_dir, netflix,
                                                      fix_lands_last):
    """base.csv and a_fix.csv land together; ingested in name order (a_fix.csv first), the
    rows of whichever landed last win, whatever their names."""
    root, settings, defs = local_pipeline(tmp_path, tiny_bert_dir)
    base = netflix.iloc[:300]
    fix = base[base["genres"].str.contains("Dramas")].head(5).assign(
        description="A corrected synopsis about a lighthouse keeper.")
    _land(root / "landing" / "base.csv", base, T0)
    _land(root / "landing" / "a_fix.csv", fix, T0 + (60 if fix_lands_last else -60))
    with instance_for_test() as instance:
        ticker = Ticker(instance, ArtifactStoreResource(uri=str(root / "landing")),
                        LandingSensorSettings(layout="flat"))
        requested = [r.partition_key for r in ticker.tick().run_requests]
        assert requested == ["a_fix.csv", "base.csv"]  # one tick, name order
        ingest(defs, instance, LocalArtifactStore(root / "landing"), requested)
        result = train(settings, instance, selection=DATA_ONLY)
        table = stored_table(root, result.run_id).set_index("id")
        meta = result.get_asset_materialization_events()[0].materialization.metadata
    winner = fix if fix_lands_last else base.set_index("id").loc[fix["id"]]
    assert (table.loc[fix["id"], "description"] == winner["description"].to_numpy()).all()
    assert meta["batches"].value == (["base.csv", "a_fix.csv"] if fix_lands_last
                                     else ["a_fix.csv", "base.csv"])
    assert meta["duplicate_ids_across_batches"].value == 5
    versions = meta["batch_versions"].value
    assert versions["a_fix.csv"]["landed_at"] == datetime.fromtimestamp(
        T0 + (60 if fix_lands_last else -60), UTC).isoformat()


def test_same_landing_time_falls_back_to_etag_order():
    same = "2026-11-30T09:00:00+00:00"
    batches = [StoredBatch("a.csv", "r1", same, "x", same, "ff"),
               StoredBatch("b.csv", "r2", same, "y", same, "0a"),
               StoredBatch("c.csv", "r3", same, "z", "2026-11-30T08:59:59+00:00", "zz")]
    assert ingest_order(batches) == ["c.csv", "b.csv", "a.csv"]
    # no landing time recorded (ingested before it was): when the version was stored
    legacy = StoredBatch("old.csv", "r0", "2026-11-29T00:00:00+00:00", "w", None, None)
    assert ingest_order([*batches, legacy])[0] == "old.csv"


def test_repeated_ids_are_attributed_to_the_batch_that_repeats_them(netflix, taxonomy):
    base = netflix.iloc[:400]
    repeats = base.iloc[100:300].assign(title="Repeated")  # 200 of 400 ids again
    batches = [("base.csv", base), ("repeats.csv", repeats), ("small.csv", netflix.iloc[900:950])]
    table, genres, stats = build_training_table([b for _, b in batches], taxonomy)
    settings = load_settings("local")
    limits = training_limits(settings)
    quality = validate_training_table(
        table, genres, min_rows=1, min_support=taxonomy.min_support, max_no_genre_share=1.0,
        rows_without_genre=stats.rows_without_genre,
        duplicate_ids_replaced=stats.duplicate_ids_replaced, input_rows=stats.input_rows,
        limits=limits.__class__(**{**limits.__dict__, "max_duplicate_id_rate": 0.1}))
    failed = [o.expectation for o in quality.failures]
    assert "duplicate id rate across batches (computed)" in failed
    found = batch_contributions(quality, batches, table)
    assert found["duplicate id rate across batches (computed)"] == [("repeats.csv", 200)]


@pytest.mark.e2e  # trains the graph: too slow for make test-fast
def test_poison_batch_is_named_then_retired_then_removed(tmp_path, tiny_bert_dir, netflix,
                                                         capsys):
    root, settings, defs = local_pipeline(tmp_path, tiny_bert_dir)
    landing = root / "landing"
    _land(landing / "good.csv", netflix.iloc[1000:1700], T0)
    poison = netflix.iloc[3000:3060].assign(
        id=lambda d: "poison:" + d["id"],
        description="A thrilling story that every one of these titles claims as its own.")
    _land(landing / "poison.csv", poison, T0 + 60)
    store = LocalArtifactStore(root / "landing")
    artifacts = LocalArtifactStore(root / "artifacts")
    with instance_for_test() as instance:
        checks = ingest(defs, instance, store, ["good.csv", "poison.csv"])
        assert checks["poison.csv"].metadata["quarantined"].value is False  # its own check

        blocked = train(settings, instance, selection=DATA_ONLY)
        quality = {c.check_name: c for c in blocked.get_asset_check_evaluations()}[
            "training_data_quality"]
        assert not quality.passed
        # 53 of the 60 titles have a trained genre and stay in the table
        assert ("expect_column_values_to_be_unique(description) (observed 7.8% (53 titles "
                "share their synopsis with another)") in quality.description
        assert "most from poison.csv (53 rows)" in quality.description
        assert "| expect_column_values_to_be_unique(description) | poison.csv | 53 |" in (
            quality.metadata["contributing_batches"].value)

        # Retired by command: the next run trains on the rest.
        stored = StoredAssetsResource(store=ArtifactStoreResource(uri=str(root / "artifacts")))
        retired = RetiredBatches(artifacts)
        assert retire_command(instance, stored, retired, "missing.csv", "typo", "ops") == 2
        assert "'missing.csv' has no accepted batch to retire; accepted batches: good.csv, " \
               "poison.csv" in capsys.readouterr().err
        assert retire_command(instance, stored, retired, "poison.csv",
                              "one synopsis for 60 titles", "data-team") == 0
        assert "poison.csv retired" in capsys.readouterr().out
        trained = train(settings, instance)
        assert trained.success
        events = {e.asset_key.to_user_string(): e.materialization.metadata
                  for e in trained.get_asset_materialization_events()}
        assert events["training_data"]["batches"].value == ["good.csv"]
        assert "| poison.csv | retired by data-team at " in (
            events["training_data"]["batches_left_out"].value)
        assert "registered_xgboost_model" in events
        drift = {c.check_name: c for c in trained.get_asset_check_evaluations()}[
            "training_data_drift"]
        assert "poison.csv" in drift.metadata["batches_left_out"].value
        assert not set(stored_table(root, trained.run_id)["id"]) & set(poison["id"])

        # A corrected upload under the same name is trained on again...
        fixed = netflix.iloc[3000:3060].assign(id=lambda d: "poison:" + d["id"])
        _land(landing / "poison.csv", fixed, T0 + 120)
        ingest(defs, instance, store, ["poison.csv"])
        again = train(settings, instance, selection=DATA_ONLY)
        assert again.success
        meta = again.get_asset_materialization_events()[0].materialization.metadata
        assert meta["batches"].value == ["good.csv", "poison.csv"]
        assert RetiredBatches(artifacts).active()["poison.csv"]["retired_by"] == "data-team"

        # ...and a file removed from the landing area leaves training too.
        (landing / "poison.csv").unlink()
        removed = train(settings, instance, selection=DATA_ONLY)
        assert removed.success
        meta = removed.get_asset_materialization_events()[0].materialization.metadata
        assert meta["batches"].value == ["good.csv"]
        assert "| poison.csv | removed from the landing area |" in (
            meta["batches_left_out"].value)
