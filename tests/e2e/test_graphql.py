"""Dagster's own GraphQL client against the running webserver: launch the asset job, read
the check results back."""

from __future__ import annotations

from tests.helpers.dagster_ui import BAD_BATCH, DagsterUI

# Training data and the reference model: the cheapest slice of the graph with data checks
# and a model gate (the browser test materializes the whole training graph).
ASSETS = ["training_data", "data_splits", "tfidf_features", "reference_model",
          "reference_evaluation"]


def test_launch_asset_job_and_read_check_results(dagster_ui: DagsterUI):
    client = dagster_ui.client()

    run_id = client.submit_job_execution("__ASSET_JOB", asset_selection=ASSETS,
                                         tags={"trending/test": "graphql"})
    assert dagster_ui.wait_for_run(run_id) == "SUCCESS", dagster_ui.log

    for asset, check in (("training_data", "training_data_quality"),
                         ("training_data", "training_data_drift"),
                         ("reference_evaluation", "reference_meets_thresholds")):
        latest = dagster_ui.check_executions(asset, check)[0]
        assert latest["runId"] == run_id, (check, latest)
        assert latest["status"] == "SUCCEEDED", (check, latest)
        assert latest["evaluation"]["success"] is True
    gate = dagster_ui.check_executions("reference_evaluation", "reference_meets_thresholds")[0]
    figures = {e["label"]: e.get("floatValue") for e in gate["evaluation"]["metadataEntries"]}
    assert 0 < figures["macro_f1"] <= 1
    assert figures["min_macro_f1"] == 0.0  # the test configuration's floor

    # The landing file whose every title is a "podcast" failed its batch check and was
    # quarantined; the failure and its reason come back through GraphQL too.
    (bad,) = [e for e in dagster_ui.check_executions("raw_titles", "raw_titles_batch_quality")
              if {"label": "file", "text": BAD_BATCH} in e["evaluation"]["metadataEntries"]]
    assert bad["status"] == "FAILED"
    assert bad["evaluation"]["success"] is False
    assert bad["evaluation"]["description"].startswith("QUARANTINED: known kind")


CATALOG = """
query { assetNodes { assetKey { path } groupName kinds opVersion
  owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  metadataEntries { label ... on TableSchemaMetadataEntry { schema { columns { name type } } } }
} }
"""
GROUPS = {
    "ingestion": {"raw_titles"},
    "training_data": {"training_data"},
    "features": {"data_splits", "tfidf_features"},
    "models": {"reference_model", "xgboost_model", "bert_model", "xgboost_hyperparameters"},
    "evaluation": {"reference_evaluation", "xgboost_evaluation", "bert_evaluation"},
    "registry": {"registered_xgboost_model", "registered_bert_model"},
}


def test_catalog_reads_as_the_design_graph(dagster_ui: DagsterUI):
    nodes = {n["assetKey"]["path"][-1]: n for n in dagster_ui.query(CATALOG)["assetNodes"]}
    assert {g: {a for a, n in nodes.items() if n["groupName"] == g} for g in GROUPS} == GROUPS
    for name, node in nodes.items():
        assert node["opVersion"], f"{name} has no code version"
        assert node["owners"] in ([{"team": "data-platform"}], [{"team": "ml"}]), name
        assert node["kinds"], f"{name} has no kinds"
    assert set(nodes["bert_model"]["kinds"]) == {"pytorch", "huggingface", "wandb"}
    assert set(nodes["xgboost_model"]["kinds"]) == {"xgboost", "wandb"}
    assert {"pandas", "greatexpectations"} <= set(nodes["raw_titles"]["kinds"])

    def columns(asset: str) -> dict[str, str]:
        (entry,) = [e for e in nodes[asset]["metadataEntries"]
                    if e["label"] == "dagster/column_schema"]
        return {c["name"]: c["type"] for c in entry["schema"]["columns"]}

    assert columns("raw_titles") == {"id": "string", "title": "string", "kind": "string",
                                     "description": "string", "genres": "string",
                                     "year": "int64", "source": "string"}
    assert columns("training_data") == {**columns("raw_titles"), "labels": "string"}
