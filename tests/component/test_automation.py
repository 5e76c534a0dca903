"""Automation conditions, freshness policies, schedules and retrain requests, on a real
Dagster instance (events reported to it, sensors ticked by the test)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    FreshnessPolicy,
    SkipReason,
    asset,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
    validate_run_config,
)

from resources.storage import LocalArtifactStore
from tests.conftest import write_test_configs
from trending_assets.automation.conditions import (
    automate,
    propagate_condition,
    retrain_decision,
)
from trending_assets.automation.requests import (
    PROCESSED_PREFIX,
    REASON_TAG,
    REQUEST_TAG,
    REQUESTED_BY_TAG,
)
from trending_assets.automation.requests import main as submit_request
from trending_assets.definitions import ASSETS, build_definitions, build_resources
from trending_assets.settings import ConfigError, RetrainSettings, load_settings

RAW, TRAINING = AssetKey("raw_titles"), AssetKey("training_data")


@pytest.fixture
def settings(tmp_path: Path, tiny_bert_dir: Path, request: pytest.FixtureRequest):
    extra = getattr(request, "param", {})
    folder = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir, extra)
    return load_settings("local", folder)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def land(instance: DagsterInstance, name: str, rows: int | None) -> None:
    """What raw_titles records for a landing file: rows when accepted, none if quarantined."""
    metadata = {"quarantined": rows is None, **({"rows": rows} if rows is not None else {})}
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key=RAW, partition=name, metadata=metadata))


# --- when to retrain ----------------------------------------------------------------------


def test_retrain_waits_for_enough_accepted_rows(instance):
    retrain = RetrainSettings(min_new_rows=100, max_wait_minutes=None, min_interval_minutes=0)

    def decide(now: float | None = None):
        return retrain_decision(instance, TRAINING, RAW, retrain, now or time.time())

    assert not decide().due and decide().why == "no newly accepted landing data"
    land(instance, "a.csv", 60)
    land(instance, "bad.csv", None)  # quarantined: stores no rows, never counts
    decision = decide()
    assert (decision.due, decision.new_rows, decision.new_batches) == (False, 60, 1)
    assert decision.why == "60 new accepted rows in 1 batch(es) < min_new_rows 100"
    land(instance, "b.csv", 50)
    assert (decide().due, decide().new_rows) == (True, 110)

    instance.report_runless_asset_event(AssetMaterialization(asset_key=TRAINING))
    assert not decide().due and decide().new_rows == 0  # counted from the last training


def test_retrain_interval_and_max_wait(instance):
    retrain = RetrainSettings(min_new_rows=100, max_wait_minutes=30, min_interval_minutes=60)
    instance.report_runless_asset_event(AssetMaterialization(asset_key=TRAINING))
    land(instance, "a.csv", 500)
    now = time.time()
    early = retrain_decision(instance, TRAINING, RAW, retrain, now)
    assert not early.due and "too recent" in early.why
    assert retrain_decision(instance, TRAINING, RAW, retrain, now + 61 * 60).due

    small = RetrainSettings(min_new_rows=1000, max_wait_minutes=30, min_interval_minutes=0)
    assert not retrain_decision(instance, TRAINING, RAW, small, now).due
    waited = retrain_decision(instance, TRAINING, RAW, small, now + 31 * 60)
    assert waited.due and "max_wait_minutes 30" in waited.why


class AutomationTicker:
    def __init__(self, settings, instance: DagsterInstance):
        self.repository = build_definitions(settings).get_repository_def()
        self.sensor = self.repository.get_sensor_def("retrain_automation")
        self.instance = instance
        self.cursor = None

    def tick(self) -> set[str]:
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       repository_def=self.repository)
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return {k.to_user_string() for r in data.run_requests for k in r.asset_selection}


def check_result(instance: DagsterInstance, name: str, passed: bool) -> None:
    instance.report_runless_asset_event(AssetCheckEvaluation(
        asset_key=TRAINING, check_name=name, passed=passed, blocking=True,
        severity=AssetCheckSeverity.ERROR))


@pytest.mark.parametrize("settings", [{"automation": {"retrain": {
    "min_new_rows": 100, "min_interval_minutes": 0}}}], indirect=True)
def test_nothing_builds_on_a_failed_blocking_check(settings, instance):
    ticker = AutomationTicker(settings, instance)
    assert ticker.tick() == set()  # first evaluation only takes note
    # training_data updated (e.g. by a person) but its blocking quality check failed
    instance.report_runless_asset_event(AssetMaterialization(asset_key=TRAINING))
    check_result(instance, "training_data_quality", False)
    check_result(instance, "training_data_drift", True)
    assert ticker.tick() == set()
    # the check passes on a re-run: the graph below follows
    check_result(instance, "training_data_quality", True)
    requested = ticker.tick()
    assert {"data_splits", "xgboost_model", "registered_bert_model"} <= requested
    assert "xgboost_hyperparameters" not in requested and "training_data" not in requested


@pytest.mark.parametrize("settings", [{"automation": {"retrain": {
    "min_new_rows": 100, "min_interval_minutes": 0}}}], indirect=True)
def test_new_accepted_rows_retrain_the_whole_graph_in_one_run(settings, instance):
    ticker = AutomationTicker(settings, instance)
    assert ticker.tick() == set()
    land(instance, "a.csv", 40)
    assert ticker.tick() == set()  # too few rows for a retrain
    land(instance, "b.csv", 70)
    assert ticker.tick() == {
        "training_data", "data_splits", "tfidf_features", "reference_model", "xgboost_model",
        "bert_model", "reference_evaluation", "xgboost_evaluation", "bert_evaluation",
        "registered_xgboost_model", "registered_bert_model"}


# --- definitions from config ------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"automation": {"freshness": {
    "training_data": {"warn_hours": 2, "fail_hours": 4},
    "registered_bert_model": {"warn_hours": None, "fail_hours": 24}}}}], indirect=True)
def test_freshness_policies_from_config(settings):
    graph = build_definitions(settings).get_repository_def().asset_graph
    assert graph.get(TRAINING).freshness_policy == FreshnessPolicy.time_window(
        fail_window=timedelta(hours=4), warn_window=timedelta(hours=2))
    assert graph.get(AssetKey("registered_bert_model")).freshness_policy == \
        FreshnessPolicy.time_window(fail_window=timedelta(hours=24))
    assert graph.get(AssetKey("registered_xgboost_model")).freshness_policy is not None  # base
    assert graph.get(AssetKey("bert_model")).freshness_policy is None


@pytest.mark.parametrize("settings", [{"automation": {"freshness": {
    "trainig_data": {"fail_hours": 4}}}}], indirect=True)
def test_unknown_asset_in_config_is_a_clear_error(settings):
    with pytest.raises(ConfigError, match=r"automation.freshness: unknown asset\(s\) "
                                          r"\['trainig_data'\]"):
        automate(ASSETS, settings)


@pytest.mark.parametrize("env,status", [("local", "STOPPED"), ("staging", "RUNNING"),
                                        ("production", "RUNNING")])
def test_sensors_and_schedule_run_in_staging_and_production(env, status):
    repository = build_definitions(load_settings(env)).get_repository_def()
    sensors = {s.name: s.default_status for s in repository.sensor_defs}
    assert set(sensors) == {"landing_sensor", "retrain_automation", "retrain_requests",
                            "quality_alerts"}
    assert set(sensors.values()) == {DefaultSensorStatus(status)}
    (schedule,) = repository.schedule_defs
    assert schedule.default_status == DefaultScheduleStatus(status)
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.job_name == "train_models"


def test_weekly_schedule_requests_the_full_retrain(settings):
    schedule = build_definitions(settings).get_repository_def().get_schedule_def(
        "weekly_full_retrain")
    (request,) = schedule.evaluate_tick(build_schedule_context()).run_requests
    assert request.tags[REASON_TAG] == "weekly full retrain"


def test_the_hyperparameter_search_is_its_own_job(settings):
    defs = build_definitions(settings)
    steps = {a.node_def.name for a in ASSETS}

    def selected(job: str) -> set[str]:
        keys = defs.resolve_job_def(job).asset_layer.selected_asset_keys
        return {k.to_user_string() for k in keys}

    # train_models (and the weekly schedule that runs it) has no step it would always skip
    assert selected("train_models") == steps - {"raw_titles", "xgboost_hyperparameters"}
    assert selected("tune_xgboost") == {"xgboost_hyperparameters"}


# --- retrain requests ---------------------------------------------------------------------


def write_request(folder: Path, name: str, body: object) -> None:
    path = folder / "requests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if isinstance(body, str) else json.dumps(body))


class RequestSensor:
    """The retrain_requests sensor over a triggers folder, alerting to a loopback webhook."""

    def __init__(self, tmp_path: Path, tiny_bert_dir: Path, instance: DagsterInstance,
                 receiver, model_paths: tuple[str, ...] = ()) -> None:
        self.triggers = tmp_path / "triggers"
        folder = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir, {
            "automation": {"retrain_requests": {"uri": str(self.triggers),
                                                "model_paths": list(model_paths)}},
            "alerts": {"channels": [{"kind": "webhook", "url": f"{receiver.url}/hook"}]}})
        settings = load_settings("local", folder)
        self.defs = build_definitions(settings)
        self.sensor = self.defs.get_repository_def().get_sensor_def("retrain_requests")
        resources = build_resources(settings)
        self.resources = {k: resources[k] for k in ("retrain_requests", "notifier")}
        self.instance = instance

    def tick(self):
        return self.sensor(build_sensor_context(instance=self.instance,
                                                resources=self.resources))


def test_retrain_requests_launch_or_are_rejected_with_an_alert(
        tmp_path, tiny_bert_dir, instance, receiver):
    requests = RequestSensor(tmp_path, tiny_bert_dir, instance, receiver)
    triggers, defs, tick = requests.triggers, requests.defs, requests.tick
    write_request(triggers, "good.json", {
        "reason": "production macro-F1 fell to 0.31", "requested_by": "model-monitor",
        "families": ["xgboost"], "overrides": {"xgboost": {"max_depth": 6}}})
    write_request(triggers, "not-json.json", "{reason: oops")
    write_request(triggers, "bad-value.json", {
        "reason": "x", "requested_by": "y", "overrides": {"xgboost": {"max_depth": 0}}})
    write_request(triggers, "bad-section.json", {
        "reason": "x", "requested_by": "y", "overrides": {"storage": {"root": "/tmp"}}})
    write_request(triggers, "stale-data.json", {
        "reason": "x", "requested_by": "y", "data_version": "0123abcd"})

    (run,) = tick().run_requests
    assert run.tags[REASON_TAG] == "production macro-F1 fell to 0.31"
    assert run.tags[REQUESTED_BY_TAG] == "model-monitor"
    assert {k.to_user_string() for k in run.asset_selection} == {
        "training_data", "data_splits", "tfidf_features", "reference_model",
        "reference_evaluation", "xgboost_model", "xgboost_evaluation",
        "registered_xgboost_model"}
    overrides = json.loads(run.run_config["resources"]["settings"]["config"]["overrides_json"])
    assert overrides == {"xgboost": {"max_depth": 6}}
    assert validate_run_config(defs.resolve_job_def("train_models"), run.run_config)

    rejected = {Path(p["details"]["request_file"]).name: p for p in receiver.payloads()}
    assert set(rejected) == {"not-json.json", "bad-value.json", "bad-section.json",
                             "stale-data.json"}
    assert all(p["kind"] == "retrain_request_rejected" for p in rejected.values())
    assert rejected["not-json.json"]["observed"].startswith("not JSON")
    assert "xgboost.max_depth" in rejected["bad-value.json"]["observed"]
    assert "only hyperparameter sections" in rejected["bad-section.json"]["observed"]
    assert "'0123abcd' is not the current training data" in \
        rejected["stale-data.json"]["observed"]

    # the rejected moved to processed/ with their outcome; the accepted one waits there
    # until its run exists, asked for again with the same run key (Dagster launches it once)
    assert [p.name for p in (triggers / "requests").iterdir()] == ["good.json"]
    (again,) = tick().run_requests
    assert again.run_key == run.run_key

    @asset
    def launched_by_the_daemon():  # a run carrying the request's run key, as launched
        return 1

    launched = materialize([launched_by_the_daemon], instance=instance,
                           tags={"dagster/run_key": run.run_key})
    assert isinstance(tick(), SkipReason)  # the run exists: the request is done
    assert list((triggers / "requests").iterdir()) == []
    outcomes = [json.loads(LocalArtifactStore(triggers).get_bytes(k)) for k in
                LocalArtifactStore(triggers).list_keys(PROCESSED_PREFIX)]
    assert sorted(o["status"] for o in outcomes) == ["accepted"] + ["rejected"] * 4
    (accepted,) = [o for o in outcomes if o["status"] == "accepted"]
    assert accepted["run_id"] == launched.run_id and accepted["run_key"] == run.run_key
    assert isinstance(tick(), SkipReason)
    assert len(receiver.payloads()) == 4


def test_rejected_requests_wait_while_the_alert_channel_is_down(
        tmp_path, tiny_bert_dir, instance, receiver):
    requests = RequestSensor(tmp_path, tiny_bert_dir, instance, receiver)
    triggers, tick = requests.triggers, requests.tick
    write_request(triggers, "a.json", "not json")
    write_request(triggers, "b.json", {"reason": "x"})
    receiver.status = 503
    tick()
    assert receiver.attempts == 1  # the dead endpoint once in the tick, not once per request
    assert sorted(p.name for p in (triggers / "requests").iterdir()) == ["a.json", "b.json"]
    receiver.status = 200
    tick()
    assert sorted(Path(p["details"]["request_file"]).name for p in receiver.payloads()) == [
        "a.json", "b.json"]
    assert list((triggers / "requests").iterdir()) == []


def test_hostile_requests_are_rejected_with_the_bound_or_location_named(
        tmp_path, tiny_bert_dir, instance, receiver):
    vetted = tmp_path / "vetted-models"
    # Real folders, so that it is the allow-list that refuses the other two.
    for folder in (vetted / "minilm", tmp_path / "unvetted", tmp_path / "vetted-models-evil"
                   / "minilm"):
        folder.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (folder / name).write_text("{}")
    requests = RequestSensor(tmp_path, tiny_bert_dir, instance, receiver,
                             model_paths=(str(vetted),))
    triggers = requests.triggers
    ask = {"reason": "x", "requested_by": "y"}
    bad = {
        "epochs.json": {"bert": {"epochs": 1e9}},
        "trees.json": {"xgboost": {"n_estimators": 1e9}},
        "features.json": {"tfidf": {"max_features": 1e12}},
        "processes.json": {"bert": {"processes": 64}},
        "boolean.json": {"bert": {"epochs": True}},
        "bucket.json": {"bert": {"model_path": "s3://someone-elses-bucket/model"}},
        "folder.json": {"bert": {"model_path": str(tmp_path / "unvetted")}},
        "beside.json": {"bert": {"model_path": f"{vetted}-evil/minilm"}},
    }
    for name, overrides in bad.items():
        write_request(triggers, name, {**ask, "overrides": overrides})
    huge = json.dumps(ask) + " " * 70_000
    write_request(triggers, "huge.json", huge)
    write_request(triggers, "vetted.json", {
        **ask, "overrides": {"bert": {"model_path": str(vetted / "minilm"), "epochs": 3}}})

    (run,) = requests.tick().run_requests
    assert run.tags[REQUEST_TAG] == "requests/vetted.json"
    observed = {Path(p["details"]["request_file"]).name: p["observed"]
                for p in receiver.payloads()}
    assert set(observed) == {*bad, "huge.json"}
    assert "bert.epochs': Input should be less than or equal to 100" in observed["epochs.json"]
    assert "xgboost.n_estimators': Input should be less than or equal to 20000" in (
        observed["trees.json"])
    assert "tfidf.max_features': Input should be less than or equal to 2000000" in (
        observed["features.json"])
    assert "bert.processes': Input should be less than or equal to 16" in (
        observed["processes.json"])
    assert "bert.epochs': Value error, true is a boolean; give a number" in (
        observed["boolean.json"])
    for name in ("bucket.json", "folder.json", "beside.json"):
        assert "is not an allowed base-model location" in observed[name], observed[name]
        assert f"automation.retrain_requests.model_paths ({vetted})" in observed[name]
    assert observed["huge.json"] == (
        f"the request file is {len(huge):,} bytes, over automation.retrain_requests."
        "max_request_bytes (65,536); a request is a small JSON object")
    outcomes = [json.loads(LocalArtifactStore(triggers).get_bytes(k)) for k in
                LocalArtifactStore(triggers).list_keys(PROCESSED_PREFIX)]
    (huge,) = [o for o in outcomes if o["request_file"].endswith("huge.json")]
    assert huge["request"] == ""  # not read, not copied


def test_submit_writes_valid_requests_and_explains_bad_ones(tmp_path, tiny_bert_dir,
                                                            monkeypatch, capsys):
    triggers = tmp_path / "triggers"
    folder = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir, {
        "automation": {"retrain_requests": {"uri": str(triggers)}}})
    monkeypatch.setenv("TRENDING_CONFIG_DIR", str(folder))
    monkeypatch.setenv("APP_ENV", "local")
    base = ["submit", "--reason", "deeper trees", "--requested-by", "alice"]

    with pytest.raises(SystemExit) as usage:
        submit_request([*base, "--overrides", "{xgboost: 6}"])
    assert usage.value.code == 2
    assert ("argument --overrides: not JSON (Expecting property name enclosed in double "
            "quotes at character 1): '{xgboost: 6}'") in capsys.readouterr().err
    assert submit_request([*base, "--overrides", '{"xgboost": {"max_depth": 0}}']) == 2
    assert "not written: overrides: invalid configuration:" in capsys.readouterr().err
    assert not triggers.exists()  # nothing written for a bad request

    assert submit_request([*base, "--family", "xgboost",
                           "--overrides", '{"xgboost": {"max_depth": 6}}']) == 0
    (written,) = (triggers / "requests").iterdir()
    assert capsys.readouterr().out == f"written: {written}\n"
    assert json.loads(written.read_text()) == {
        "reason": "deeper trees", "requested_by": "alice", "families": ["xgboost"],
        "overrides": {"xgboost": {"max_depth": 6}}}


def test_a_retrain_request_does_not_pull_other_families_along(instance):
    @asset
    def splits():
        return 1

    @asset(deps=[splits], automation_condition=propagate_condition())
    def other_family_model():
        return 2

    ticks = []

    def tick() -> int:
        result = evaluate_automation_conditions(
            defs=[splits, other_family_model], instance=instance,
            cursor=ticks[-1].cursor if ticks else None)
        ticks.append(result)
        return result.get_num_requested(other_family_model.key)

    assert tick() == 0
    materialize([splits], instance=instance, tags={REQUEST_TAG: "requests/r.json"})
    assert tick() == 0  # updated by a request for another family: not followed
    materialize([splits], instance=instance, tags={"trending/trigger": "automation"})
    assert tick() == 1  # new data: followed


def test_a_request_name_that_would_leave_processed_is_rejected_and_kept_inside(
        tmp_path, tiny_bert_dir, instance, receiver, s3_client):
    from resources.storage import S3ArtifactStore
    from trending_assets.automation.requests import process_requests

    bucket = f"triggers-{tmp_path.name[-8:].lower().replace('_', '-')}"
    s3_client.create_bucket(Bucket=bucket)
    folder = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir, {
        "alerts": {"channels": [{"kind": "webhook", "url": f"{receiver.url}/hook"}]}})
    settings = load_settings("local", folder)
    notifier = build_resources(settings)["notifier"]
    body = json.dumps({"reason": "x", "requested_by": "y"}).encode()
    for key in ("triggers/requests/../../escape.json", "triggers/requests/.partial.json"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    store = S3ArtifactStore(s3_client, bucket, "triggers")

    runs, rejected = process_requests(store, instance, settings, notifier)
    assert runs == [] and rejected == ["requests/../../escape.json"]
    (alert,) = receiver.payloads()
    assert alert["observed"] == ("the request file name '../../escape.json' is refused: it has "
                                 "a '..' segment (a parent folder)")
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys[0].startswith("triggers/processed/unsafe-name-") and len(keys) == 2
    assert keys[1] == "triggers/requests/.partial.json"  # an upload in progress: left alone
