"""End to end with a real Dagster instance, the sensors ticked by the test as the daemon would:
a landing file arrives, the graph retrains and registers a new version; a bad file arrives,
an alert reaches a webhook on loopback and nothing downstream runs."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    RunRequest,
    build_sensor_context,
    instance_for_test,
)

from tests.conftest import write_test_configs
from trending_assets.assets.ingestion import landing_files
from trending_assets.definitions import build_definitions, build_resources
from trending_assets.settings import Settings, load_settings

MODELS = ("trending-now-xgboost", "trending-now-bert")


class Daemon:
    """What the Dagster daemon does with the code location's sensors, one tick at a time:
    keep each sensor's cursor, add the dynamic partitions it asks for, and run what it
    requests (in process, on the same instance)."""

    def __init__(self, defs: Definitions, settings: Settings, instance: DagsterInstance):
        self.defs = defs
        self.repository = defs.get_repository_def()
        self.resources = build_resources(settings)
        self.instance = instance
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str) -> list[RunRequest]:
        sensor = self.repository.get_sensor_def(name)
        context = build_sensor_context(
            instance=self.instance, instance_ref=self.instance.get_ref(),
            cursor=self.cursors.get(name),
            repository_def=self.repository,
            resources={k: self.resources[k] for k in sensor.required_resource_keys})
        data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name,
                                                 list(request.partition_keys))
        return list(data.run_requests or [])

    def run(self, request: RunRequest, job_name: str | None = None) -> str:
        if request.asset_selection is not None:
            job = self.defs.resolve_implicit_job_def_def_for_assets(request.asset_selection)
            result = job.execute_in_process(
                instance=self.instance, asset_selection=list(request.asset_selection),
                tags=request.tags, raise_on_error=False)
        else:
            result = self.defs.resolve_job_def(job_name).execute_in_process(
                instance=self.instance, partition_key=request.partition_key,
                tags=request.tags, raise_on_error=False)
        assert result.success, result.run_id
        return result.run_id


def materializations(instance: DagsterInstance, name: str) -> int:
    return len(instance.fetch_materializations(AssetKey(name), limit=100).records)


def test_landing_file_retrains_and_bad_file_alerts(pipeline_env, tmp_path: Path,
                                                  tiny_bert_dir: Path,
                                                  receiver):
    config_dir = write_test_configs(
        tmp_path / "e2e-configs", pipeline_env["root"], tiny_bert_dir, {
            "automation": {"retrain": {"min_new_rows": 100, "min_interval_minutes": 0,
                                       "max_wait_minutes": None}},
            # what is tested is when the graph runs, not how well: the quickest XGBoost
            "xgboost": {"n_estimators": 10, "linear_folds": 0, "nb_scores": False,
                        "boost_from_linear": False},
            "alerts": {"channels": [{"kind": "webhook", "url": f"{receiver.url}/hook"}],
                       "ui_base_url": "http://ui.test"},
        })
    settings = load_settings("local", config_dir)
    defs = build_definitions(settings)
    registry = build_resources(settings)["registry"].open()
    with instance_for_test() as instance:
        daemon = Daemon(defs, settings, instance)
        assert daemon.tick("quality_alerts") == []  # starts alerting from now
        # running before anything lands (a condition's first evaluation only takes note)
        assert daemon.tick("retrain_automation") == []

        # a landing file arrives: ingested, then the graph below raw_titles retrains
        (ingest,) = daemon.tick("landing_sensor")
        assert ingest.partition_key == "batch-001.csv"
        daemon.run(ingest, "ingest_landing_file")
        (retrain,) = daemon.tick("retrain_automation")
        assert AssetKey("training_data") in retrain.asset_selection
        assert AssetKey("registered_bert_model") in retrain.asset_selection
        assert AssetKey("xgboost_hyperparameters") not in retrain.asset_selection
        assert AssetKey("raw_titles") not in retrain.asset_selection
        daemon.run(retrain)
        assert {m: registry.versions(m) for m in MODELS} == {m: [1] for m in MODELS}
        assert daemon.tick("retrain_automation") == []  # handled: nothing more to do

        # a bad file arrives: quarantined at ingestion, an alert, nothing downstream
        (pipeline_env["landing"] / "bad.csv").write_text(
            "id,name\n1,a file from the wrong export\n")
        (bad,) = daemon.tick("landing_sensor")
        assert bad.partition_key == "bad.csv"
        bad_run = daemon.run(bad, "ingest_landing_file")
        assert daemon.tick("retrain_automation") == []
        assert daemon.tick("quality_alerts") == []
        (alert,) = receiver.payloads()
        assert alert["kind"] == "quarantined"
        assert alert["asset"] == "raw_titles"
        assert alert["check"] == "raw_titles_batch_quality"
        assert alert["run_id"] == bad_run
        assert alert["details"]["file"] == "bad.csv"
        assert alert["url"] == ("http://ui.test/assets/raw_titles?view=checks"
                                "&checkDetail=raw_titles_batch_quality")
        assert "missing" in alert["observed"].lower() or "column" in alert["observed"].lower()
        assert materializations(instance, "training_data") == 1
        assert {m: registry.versions(m) for m in MODELS} == {m: [1] for m in MODELS}
        assert sorted(instance.get_dynamic_partitions(landing_files.name)) == [
            "bad.csv", "batch-001.csv"]
        # a restart of the alert sensor from its stored cursor sends nothing again
        assert daemon.tick("quality_alerts") == []
        assert len(receiver.payloads()) == 1
        assert json.loads(daemon.cursors["quality_alerts"])["checks"]
