"""The whole graph on a small real sample, through the real Definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, instance_for_test

from resources.registry import ModelRegistry
from resources.storage import LocalArtifactStore
from tests.helpers.pipeline import Pipeline
from tests.helpers.wandb_offline import read_run
from trending_assets.definitions import build_definitions
from trending_assets.settings import load_settings

ALL_ASSETS = {
    "raw_titles", "training_data", "data_splits", "tfidf_features", "reference_model",
    "xgboost_model", "bert_model", "reference_evaluation", "xgboost_evaluation",
    "bert_evaluation", "registered_xgboost_model", "registered_bert_model",
}
LINEAGE_FIELDS = ("dagster_run_id", "trigger", "git_commit", "config_hash", "environment",
                  "data_version", "libraries")


def run_pipeline(instance: DagsterInstance, config_dir: Path, files: list[str],
                 overrides: dict | None = None):
    settings = load_settings("local", config_dir)
    defs = build_definitions(settings, json.dumps(overrides or {}))
    instance.add_dynamic_partitions("landing_files", files)
    for name in files:
        result = defs.resolve_job_def("ingest_landing_file").execute_in_process(
            instance=instance, partition_key=name)
        assert result.success
    training = defs.resolve_job_def("train_models").execute_in_process(
        instance=instance, raise_on_error=False)
    return settings, training


def test_whole_graph_materializes_registers_and_tracks(trained_graph: Pipeline):
    instance, settings = trained_graph.instance, trained_graph.settings
    result = trained_graph.first_run

    materialized = {e.asset_key.to_user_string()
                    for e in result.get_asset_materialization_events()}
    assert materialized == ALL_ASSETS - {"raw_titles"}
    assert instance.get_materialized_partitions(AssetKey("raw_titles")) == {"batch-001.csv"}

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"training_data_quality", "training_data_drift",
                           "reference_meets_thresholds", "xgboost_meets_thresholds",
                           "bert_meets_thresholds"}
    assert all(c.passed for c in checks.values())

    # every materialization records its lineage
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        for field in LINEAGE_FIELDS:
            assert field in meta, (event.asset_key, field)
        assert meta["dagster_run_id"].value == result.run_id
        assert meta["peak_memory_mb"].value > 0

    # the other platforms' titles ride along as the `ood` split, never trained on
    splits_meta = next(e.materialization.metadata
                       for e in result.get_asset_materialization_events()
                       if e.asset_key == AssetKey("data_splits"))
    assert splits_meta["ood_rows"].value == 300

    registry = ModelRegistry(LocalArtifactStore(settings.storage.root))
    for family in ("xgboost", "bert"):
        model = f"trending-now-{family}"
        assert registry.versions(model) == [1]
        record = registry.get(model, 1)
        assert {"kind=movie", "kind=tv", "ood", "ood:source=amazon_prime",
                "ood:source=hulu", "ood:source=disney_plus"} == set(record["metrics"]["slices"])
        assert record["lineage"]["dagster_run_id"] == result.run_id
        assert len(record["lineage"]["config_hash"]) == 16
        assert record["lineage"]["data_version"]
        assert 0 < record["metrics"]["macro_f1"] <= 1
        assert set(record["thresholds"]) == set(
            json.loads((Path(settings.storage.root) / "assets" / "data_splits").joinpath(
                result.run_id, "genres.json").read_text()))
        assert record["upstream"][f"{family}_model"]["artifact_uri"].startswith(
            settings.storage.root)
        # the shared graph promotes both families on the first run (GOVERNANCE_CONFIG)
        assert registry.aliases(model) == {"staging": 1, "production": 1}
        assert "thresholds.json" in record["files"]

    # W&B offline runs: one per training and evaluation asset, with what they logged
    folders = sorted((Path(settings.tracking.dir) / "wandb").glob("offline-run-*"))
    runs = [read_run(f) for f in folders]
    # GOVERNANCE_CONFIG mirrors each registered version into the W&B registry: one more run each
    mirrored = [r for r in runs if "family" not in r["config"]]
    assert sorted((r["config"]["model"], r["config"]["version"]) for r in mirrored) == [
        ("trending-now-bert", 1), ("trending-now-xgboost", 1)]
    runs = [r for r in runs if "family" in r["config"]]
    by_family = {(r["config"]["family"], "lineage" in r["config"] and
                  "params" in r["config"]): r for r in runs}
    assert len(runs) == 6
    bert_train = by_family[("bert", True)]
    assert any("val/macro_f1" in h for h in bert_train["history"])
    assert bert_train["config"]["lineage"]["dagster_run_id"] == result.run_id
    assert any("train/logloss" in h for h in by_family[("xgboost", True)]["history"])
    assert {"bert-model", "bert-evaluation"} <= {a for r in runs for a in r["artifacts"]}
    bert_eval = by_family[("bert", False)]
    assert 0 < bert_eval["summary"]["test/macro_f1"] <= 1


def test_failing_gate_refuses_registration_and_the_run_succeeds(pipeline_env):
    impossible = {"gates": {"xgboost": {"min_macro_f1": 1.0,
                                        "slices": [{"slice": "ood", "min_macro_f1": 1.0}]}}}
    with instance_for_test() as instance:
        settings, result = run_pipeline(instance, pipeline_env["config_dir"],
                                        ["batch-001.csv"], impossible)
        assert result.success  # a refused model is a result, not a failed run
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert not checks["xgboost_meets_thresholds"].passed
        assert checks["xgboost_meets_thresholds"].severity == AssetCheckSeverity.WARN
        assert "macro_f1" in checks["xgboost_meets_thresholds"].description
        # the out-of-distribution slice is judged, not skipped
        assert set(checks["xgboost_meets_thresholds"].metadata["failed"].value) == {
            "macro_f1", "ood/macro_f1"}
        assert checks["bert_meets_thresholds"].passed
        materialized = {e.asset_key.to_user_string(): e.materialization.metadata
                        for e in result.get_asset_materialization_events()}
        refused = materialized["registered_xgboost_model"]  # the decision, not a version
        assert refused["decision"].value == "refused"
        assert refused["version"].value is None and refused["registered"].value is False
        assert refused["failed_criteria"].value == ["macro_f1", "ood/macro_f1"]
        assert refused["reason"].value.startswith("macro_f1 ")
        assert "registered_bert_model" in materialized
        registry = ModelRegistry(LocalArtifactStore(settings.storage.root))
        assert registry.versions("trending-now-xgboost") == []
        assert registry.versions("trending-now-bert") == [1]


def test_later_batch_wins_and_is_counted(pipeline_env):
    first = pd.read_csv(pipeline_env["landing"] / "batch-001.csv", keep_default_na=False)
    update = first.head(3).assign(description="A brand new synopsis about a haunted house.")
    update.to_csv(pipeline_env["landing"] / "batch-002.csv", index=False)
    with instance_for_test() as instance:
        settings, result = run_pipeline(instance, pipeline_env["config_dir"],
                                        ["batch-001.csv", "batch-002.csv"])
        assert result.success
        (event,) = [e for e in result.get_asset_materialization_events()
                    if e.asset_key == AssetKey("training_data")]
        table = pd.read_parquet(Path(settings.storage.root) / "assets" / "training_data"
                                / result.run_id / "table.parquet")
        replaced = table[table["id"].isin(update["id"])]
        assert len(replaced) == 3
        assert (replaced["description"] == update["description"].iloc[0]).all()
        assert event.materialization.metadata["rows"].value == len(table)
