"""Governance through the real Dagster graph: first run, a refused challenger on a grown
split (champion re-scored on the same rows), an audited forced promotion, and retraining
registered versions from their manifests.

The first run and the reproductions read the test run's shared trained graph (the
`trained_graph` fixture, tests/e2e/conftest.py); the challenger ingests and trains again, so
it has a graph of its own."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey

from tests.helpers.pipeline import GOVERNANCE_CONFIG, Pipeline, first_run
from trending_assets.governance import reproduce_version

XGB, BERT = "trending-now-xgboost", "trending-now-bert"
XGBOOST_PATH = ["training_data", "data_splits", "tfidf_features", "reference_model",
                "reference_evaluation", "xgboost_model", "xgboost_evaluation",
                "registered_xgboost_model"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path,
             netflix: pd.DataFrame) -> Iterator[Pipeline]:
    """A graph of its own for the challenger, which ingests a second batch and trains again;
    only the XGBoost path, all the challenger reads. Small random samples: a second batch of
    150 titles drifts from the first 400 by chance, so GOVERNANCE_CONFIG opens the drift gate."""
    sample = netflix.sample(550, random_state=1)
    with first_run(tmp_path_factory.mktemp("governance"), tiny_bert_dir,
                   {"batch-001.csv": sample.iloc[:400], "batch-002.csv": sample.iloc[400:]},
                   GOVERNANCE_CONFIG, XGBOOST_PATH) as run:
        yield run


def test_first_run_registers_blessing_card_and_manifest(trained_graph: Pipeline) -> None:
    registry = trained_graph.registry
    for model in (XGB, BERT):
        assert registry.versions(model) == [1]
        assert registry.aliases(model) == {"staging": 1, "production": 1}
        record = registry.get(model, 1)
        blessing = record["blessing"]
        assert blessing["decision"] == "promoted"
        assert blessing["policy"] == "first_run"
        assert blessing["summary"].startswith(
            "first run: no production champion, judged on value thresholds only; promoted "
            "to production")
        assert {c["kind"] for c in blessing["criteria"]} == {"value"}  # test gates: 2 floors
        assert set(record["documents"]) == {"model_card.md", "model_card.json",
                                            "manifest.json", "blessing.md"}
        card = json.loads(registry.document(model, 1, "model_card.json"))
        assert card["version"] == 1
        assert card["metrics"]["overall"]["macro_f1"] == pytest.approx(
            record["metrics"]["macro_f1"])
        manifest = json.loads(registry.document(model, 1, "manifest.json"))
        assert manifest["data"]["content_hash"] == record["lineage"]["data_version"]
        assert manifest["data"]["splits_version"] == trained_graph.first_run.run_id
        assert manifest["config"]["xgboost"]["n_estimators"] == 30
        assert manifest["dependencies"]["dagster"] == "1.13.27"
        # W&B backend, offline: the version was logged to W&B, its registry link waits
        link = registry.wandb_links(model)[1]
        assert link["status"] == "pending"
        assert link["artifact"] == f"{model}:registry-v0001"
        assert link["target"] == f"wandb-registry-model/{model}"
        assert link["aliases"] == ["staging", "production"]
        assert record["wandb"]["registry_target"] == link["target"]
    bert_manifest = json.loads(registry.document(BERT, 1, "manifest.json"))
    assert len(bert_manifest["base_model"]["sha256"]) == 64

    (event,) = [e for e in trained_graph.first_run.get_asset_materialization_events()
                if e.asset_key == AssetKey("registered_xgboost_model")]
    meta = event.materialization.metadata
    assert meta["decision"].value == "promoted"
    assert meta["aliases"].value == ["staging", "production"]
    assert "**Decision: PROMOTED**" in meta["blessing"].value
    assert "| criterion | observed | threshold | result | reason |" in meta["blessing"].value
    assert meta["model_card"].value.startswith(f"# Model card: {XGB} v1")
    assert meta["wandb_registry_link"].value == "pending"


def test_retraining_from_the_manifest_reproduces_xgboost_exactly(trained_graph: Pipeline) -> None:
    outcome = reproduce_version(trained_graph.settings, XGB, 1)
    assert outcome.tolerance == 0.0
    assert len(outcome.rows) > 10  # overall, slices and every genre
    assert all(r.difference == 0.0 for r in outcome.rows), outcome.table()
    assert outcome.reproduced


def test_retraining_from_the_manifest_reproduces_bert_within_tolerance(
        trained_graph: Pipeline) -> None:
    outcome = reproduce_version(trained_graph.settings, BERT, 1)
    assert outcome.tolerance == 0.02  # configs/base.yaml: registry.reproduce_tolerance.bert
    assert outcome.reproduced, outcome.table()
    assert outcome.largest_difference <= 0.02


def test_challenger_refused_then_forced_with_audit(pipeline: Pipeline, caplog) -> None:
    registry = pipeline.registry
    pipeline.ingest(["batch-002.csv"])  # the split grows: the champion is re-scored
    demanding = {"gates": {"xgboost": {"champion": [
        {"metric": "macro_f1", "absolute": 0.5}]}}}  # an improvement no retrain can show
    refused = pipeline.train(XGBOOST_PATH, demanding)
    assert refused.success  # a refusal is a decision, not a failure
    assert registry.versions(XGB) == [1, 2]
    blessing = registry.get(XGB, 2)["blessing"]
    assert blessing["decision"] == "refused"
    assert blessing["champion"]["version"] == 1
    assert blessing["champion"]["source"] == "re-scored"
    v1_genres, v2_genres = (set(registry.get(XGB, v)["thresholds"]) for v in (1, 2))
    # genres that reached min_support with the new batch: the champion scores 0 on them
    assert set(blessing["champion"]["missing_genres"]) == v2_genres - v1_genres
    (failed,) = [c for c in blessing["criteria"] if c["outcome"] == "fail"]
    assert failed["name"] == "macro_f1 vs champion"
    assert failed["reason"].startswith("macro_f1 ")
    assert "vs champion v1" in failed["reason"] and "< allowed +0.500" in failed["reason"]
    assert registry.aliases(XGB) == {"staging": 1, "production": 1}
    assert registry.get(XGB, 1)["evaluation_rows"] != registry.get(XGB, 2)["evaluation_rows"]

    # forcing without a reason: rejected, nothing registered
    force = {"ops": {"registered_xgboost_model": {"config": {
        "force_promotion": True, "author": "alice"}}}}
    rejected = pipeline.train(["registered_xgboost_model"], demanding, force)
    assert not rejected.success
    failure = next(e for e in rejected.all_events if e.is_step_failure)
    assert "needs a non-empty reason" in str(failure.step_failure_data.error)
    assert registry.versions(XGB) == [1, 2]

    force["ops"]["registered_xgboost_model"]["config"]["reason"] = "catalogue relaunch"
    with caplog.at_level(logging.WARNING, logger="trending_assets.alerts"):
        forced = pipeline.train(["registered_xgboost_model"], demanding, force)
    assert forced.success
    assert registry.versions(XGB) == [1, 2, 3]
    record = registry.get(XGB, 3)["blessing"]
    assert record["decision"] == "promoted"
    assert record["override"] == {"author": "alice", "reason": "catalogue relaunch",
                                  "used": True, "overridden": ["macro_f1 vs champion"]}
    assert registry.aliases(XGB) == {"staging": 3, "production": 3}
    moves = registry.alias_history(XGB)[-2:]
    assert {m["alias"] for m in moves} == {"staging", "production"}
    assert all("FORCED promotion to production by alice (catalogue relaunch)" in m["reason"]
               for m in moves)
    alerts = [r.getMessage() for r in caplog.records if r.name == "trending_assets.alerts"]
    assert any(f"{XGB}: forced promotion to staging, production by alice: catalogue relaunch"
               in a for a in alerts), alerts
