"""Overlapping runs: every step reads the input versions of its own run."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    InputContext,
    asset,
    instance_for_test,
    materialize,
)

from resources.io_manager import ArtifactIOManager
from resources.quarantine import TrainingDataBaseline
from resources.registry import ModelRegistry
from resources.storage import ArtifactStoreResource, LocalArtifactStore
from trending_assets import settings as settings_module
from trending_assets.definitions import build_assets, build_resources
from trending_assets.governance import MANIFEST_FILE
from trending_assets.settings import Settings, load_settings

PREPARED = ["training_data", "data_splits", "tfidf_features", "reference_model",
            "reference_evaluation"]
XGBOOST = ["xgboost_model", "xgboost_evaluation", "registered_xgboost_model"]
DEADLINE_S = 600

# What a step of a hooked run does before it loads an asset, by asset name.
BEFORE_LOAD: dict[str, list[Callable[[], None]]] = {}


class HookedIOManager(ArtifactIOManager):
    """The real IO manager; runs the BEFORE_LOAD hooks of the asset it loads first."""

    def load_input(self, context: InputContext) -> Any:
        for hook in BEFORE_LOAD.get(context.asset_key.to_user_string(), []):
            hook()
        return super().load_input(context)


@pytest.fixture(autouse=True)
def no_hooks() -> Iterator[None]:
    yield
    BEFORE_LOAD.clear()


class Pause:
    """Holds a run's step in a hook until the test releases it."""

    def __init__(self) -> None:
        self.entered, self.released = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.released.wait(DEADLINE_S), "the paused run was never released"


def in_thread(work: Callable[[], ExecuteInProcessResult]) -> Callable[[], ExecuteInProcessResult]:
    """Start `work` in a thread; the returned function joins it and gives its result."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()

    def join() -> ExecuteInProcessResult:
        thread.join(DEADLINE_S)
        assert not thread.is_alive()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return join


PRODUCED = {"value": 0}


@asset
def upstream() -> dict:
    return {"value": PRODUCED["value"]}


@asset
def downstream(upstream: dict) -> dict:
    return upstream


def test_an_input_from_an_earlier_run_is_the_version_current_when_the_run_started(tmp_path):
    store = ArtifactStoreResource(uri=str(tmp_path))
    hooked = {"io_manager": HookedIOManager(store=store)}
    plain = {"io_manager": ArtifactIOManager(store=store)}
    with instance_for_test() as instance:
        PRODUCED["value"] = 1
        first = materialize([upstream, downstream], resources=plain, instance=instance,
                            selection=["upstream"])
        assert first.success
        pause = Pause()
        BEFORE_LOAD["upstream"] = [pause]
        # run A reads upstream, written before it started; run B rewrites it meanwhile
        join = in_thread(lambda: materialize([upstream, downstream], resources=hooked,
                                             instance=instance, selection=["downstream"]))
        assert pause.entered.wait(DEADLINE_S)
        PRODUCED["value"] = 2
        assert materialize([upstream, downstream], resources=plain, instance=instance,
                           selection=["upstream"]).success
        pause.released.set()
        a = join()
        assert a.output_for_node("downstream") == {"value": 1}
        stored = json.loads((tmp_path / "assets/downstream" / a.run_id / "value.json").read_text())
        assert stored == {"value": 1}
        # a run started after B reads B's version
        later = materialize([upstream, downstream], resources=plain, instance=instance,
                            selection=["downstream"])
        assert later.output_for_node("downstream") == {"value": 2}


def test_an_input_first_written_after_the_run_started_is_not_read(tmp_path):
    store = ArtifactStoreResource(uri=str(tmp_path))
    hooked = {"io_manager": HookedIOManager(store=store)}
    plain = {"io_manager": ArtifactIOManager(store=store)}
    with instance_for_test() as instance:
        pause = Pause()
        BEFORE_LOAD["upstream"] = [pause]
        join = in_thread(lambda: materialize(
            [upstream, downstream], resources=hooked, instance=instance,
            selection=["downstream"], raise_on_error=False))
        assert pause.entered.wait(DEADLINE_S)
        assert materialize([upstream, downstream], resources=plain, instance=instance,
                           selection=["upstream"]).success
        pause.released.set()
        a = join()
        assert not a.success
        (failure,) = [e for e in a.all_events if e.is_step_failure]
        assert "were written after run" in failure.step_failure_data.error.cause.message


def run_assets(instance: DagsterInstance, settings: Settings, selection: list[str],
               overrides: dict | None = None, hooked: bool = False,
               partition: str | None = None) -> ExecuteInProcessResult:
    resources = build_resources(settings, json.dumps(overrides or {}))
    if hooked:
        resources["io_manager"] = HookedIOManager(store=resources["io_manager"].store)
    return materialize(build_assets(settings), resources=resources, instance=instance,
                       selection=selection, partition_key=partition)


def materialization(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def prepare(instance: DagsterInstance, settings: Settings) -> ExecuteInProcessResult:
    """Ingest the landing file and build everything the XGBoost steps read."""
    instance.add_dynamic_partitions("landing_files", ["batch-001.csv"])
    assert run_assets(instance, settings, ["raw_titles"], partition="batch-001.csv").success
    prepared = run_assets(instance, settings, PREPARED)
    assert prepared.success
    return prepared


def test_overlapping_runs_each_register_their_own_model(pipeline_env):
    settings = load_settings("local", pipeline_env["config_dir"])
    config_a = {"xgboost": {"n_estimators": 30, "max_depth": 6}}
    config_b = {"xgboost": {"n_estimators": 3, "max_depth": 2}}
    with instance_for_test() as instance:
        prepared = prepare(instance, settings)
        pause = Pause()
        BEFORE_LOAD["xgboost_model"] = [pause]
        # Run A trains with config A, then waits as its evaluation starts loading the model.
        join = in_thread(lambda: run_assets(instance, settings, XGBOOST, config_a, hooked=True))
        assert pause.entered.wait(DEADLINE_S), "run A never reached its evaluation"
        # Run B starts later, trains with config B and registers while A waits.
        b = run_assets(instance, settings, XGBOOST, config_b)
        pause.released.set()
        a = join()
        assert a.success and b.success

        registry = ModelRegistry(LocalArtifactStore(settings.storage.root))
        assert registry.versions("trending-now-xgboost") == [1, 2]
        by_run = {registry.get("trending-now-xgboost", v)["lineage"]["dagster_run_id"]: v
                  for v in (1, 2)}
        assert set(by_run) == {a.run_id, b.run_id}
        splits_sha = materialization(prepared, "data_splits")["artifact_sha256"]
        for result in (a, b):
            model = materialization(result, "xgboost_model")
            evaluation = materialization(result, "xgboost_evaluation")
            registered = materialization(result, "registered_xgboost_model")
            record = registry.get("trending-now-xgboost", by_run[result.run_id])
            # the evaluation scored this run's model and the version holds its metrics
            assert json.loads(json.dumps(evaluation["input_versions"]))["xgboost_model"] == {
                "version": result.run_id, "artifact_sha256": model["artifact_sha256"],
                "this_run": True}
            assert registered["macro_f1"] == round(evaluation["macro_f1"], 3)  # for people
            assert record["metrics"]["macro_f1"] == evaluation["macro_f1"]  # full precision
            # lineage names the exact inputs: this run's model and evaluation, the splits
            # both runs started with
            inputs = record["lineage"]["input_versions"]
            assert inputs["xgboost_model"]["artifact_sha256"] == model["artifact_sha256"]
            assert inputs["xgboost_evaluation"]["artifact_sha256"] == \
                evaluation["artifact_sha256"]
            assert inputs["data_splits"] == {"version": prepared.run_id,
                                             "artifact_sha256": splits_sha, "this_run": False}
            # and so does the record's `upstream` (the manifest's splits_version reads it)
            assert record["upstream"]["xgboost_model"]["dagster_run_id"] == result.run_id
            assert record["upstream"]["xgboost_evaluation"]["dagster_run_id"] == result.run_id
            assert record["upstream"]["data_splits"]["dagster_run_id"] == prepared.run_id
        # the two configurations gave two different models, and each run kept its own
        assert materialization(a, "xgboost_evaluation")["macro_f1"] != \
            materialization(b, "xgboost_evaluation")["macro_f1"]
        stored_a = Path(settings.storage.root, "assets", "xgboost_model", a.run_id)
        assert stored_a.is_dir()


def test_configuration_edited_during_a_run_does_not_reach_its_later_steps(pipeline_env):
    settings = load_settings("local", pipeline_env["config_dir"])
    local_yaml = pipeline_env["config_dir"] / "local.yaml"
    genres_yaml = pipeline_env["config_dir"] / settings.data.taxonomy_file
    taxonomy_sha256 = hashlib.sha256(json.dumps(
        yaml.safe_load(genres_yaml.read_text()), sort_keys=True).encode()).hexdigest()

    def edit_configuration() -> None:
        overlay = yaml.safe_load(local_yaml.read_text())
        overlay["xgboost"]["learning_rate"] = 0.05
        local_yaml.write_text(yaml.safe_dump(overlay))
        genres = yaml.safe_load(genres_yaml.read_text())
        genres_yaml.write_text(yaml.safe_dump({**genres, "min_support": 60}))
        # A step in its own process (multiprocess, Kubernetes) starts with nothing cached.
        settings_module._load_cached.cache_clear()

    with instance_for_test() as instance:
        prepare(instance, settings)
        BEFORE_LOAD["xgboost_model"] = [edit_configuration]
        result = run_assets(instance, settings, XGBOOST, hooked=True)
        assert result.success
        edited = load_settings("local", pipeline_env["config_dir"])
        assert edited.xgboost.learning_rate == 0.05
        assert edited.fingerprint() != settings.fingerprint()

        # every step, the one that ran after the edit included, used the starting configuration
        hashes = {asset: materialization(result, asset)["config_hash"] for asset in XGBOOST}
        assert hashes == dict.fromkeys(XGBOOST, settings.fingerprint())
        registry = ModelRegistry(LocalArtifactStore(settings.storage.root))
        manifest = json.loads(registry.document("trending-now-xgboost", 1, MANIFEST_FILE))
        assert manifest["config"]["xgboost"]["learning_rate"] == settings.xgboost.learning_rate
        assert manifest["data"]["taxonomy_sha256"] == taxonomy_sha256
        snapshot = Path(settings.storage.root, "runs", result.run_id, "configuration.json")
        assert json.loads(snapshot.read_text())["settings"]["xgboost"]["learning_rate"] == \
            settings.xgboost.learning_rate


def test_a_drift_baseline_accepted_after_the_run_started_is_not_its_baseline(pipeline_env):
    settings = load_settings("local", pipeline_env["config_dir"])
    baselines = TrainingDataBaseline(LocalArtifactStore(settings.storage.root))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_files", ["batch-001.csv"])
        assert run_assets(instance, settings, ["raw_titles"], partition="batch-001.csv").success
        first = run_assets(instance, settings, ["training_data"])
        assert materialization(first, "training_data")["drift_baseline"] == \
            "none (first accepted version)"
        pause = Pause()
        BEFORE_LOAD["raw_titles"] = [pause]
        # Run A waits as its training_data step loads the batches...
        join = in_thread(lambda: run_assets(instance, settings, ["training_data"], hooked=True))
        assert pause.entered.wait(DEADLINE_S), "run A never reached training_data"
        # ...while run B, started later, stores training_data and it is accepted.
        b = run_assets(instance, settings, ["training_data"])
        assert baselines.accepted()["version"] == b.run_id
        pause.released.set()
        a = join()
        assert a.success and b.success
        # A compares with what was accepted when it started, as B does.
        for result in (a, b):
            assert materialization(result, "training_data")["drift_baseline"] == \
                f"{first.run_id} (last accepted)"
        # A run started after both compares with the newest accepted before it: A's.
        assert baselines.accepted()["version"] == a.run_id
        later = run_assets(instance, settings, ["training_data"])
        assert materialization(later, "training_data")["drift_baseline"] == \
            f"{a.run_id} (last accepted)"
