"""The cluster path, run: staging on the local stack (trending_assets/rehearsal).

The staging smoke test (the command CD runs in the cluster) runs in a pod of the Kubernetes
stand-in against PostgreSQL and moto's S3 server; the CLI's training run starts every step
as a Kubernetes Job through the unmodified k8s_job_executor. While BERT trains, its pod is
SIGKILLed (a preempted node): the step's retry is a new Job that resumes from the newest
checkpoint in S3, and the run still registers a version of each family. Then a landing
file is picked up by the landing sensor (the daemon's own sensor iteration), whose run the
K8sRunLauncher starts as a run pod in the stand-in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._daemon.sensor import execute_sensor_iteration

from resources.io_manager import read_version, stored_base
from trending_assets.ml.bert.checkpoint import MANIFEST
from trending_assets.ml.bert.model import BertGenreModel, train_bert
from trending_assets.ml.dataset import TitleSplits
from trending_assets.rehearsal import stack
from trending_assets.rehearsal.kube import KubeStandIn, image_env
from trending_assets.settings import REPO_ROOT, load_settings
from trending_assets.storage_resources import storage_resources

pytestmark = pytest.mark.postgres  # the stack's PostgreSQL server

# Enough optimizer steps that the kill lands mid-training, after a checkpoint.
BERT_OVERLAY = {"bert": {"epochs": 4, "checkpoint_every_steps": 5}}


class Preemption:
    """Kills the bert_model pod once its run has stored a checkpoint in S3 (once)."""

    def __init__(self) -> None:
        self.killed: str | None = None

    def __call__(self, cluster: stack.LocalCluster) -> None:
        if self.killed:
            return
        pods = cluster.kube.running_pods("bert_model")
        if pods and self._complete_checkpoint(cluster.s3()):
            cluster.kube.kill_pod(pods[0])
            self.killed = pods[0].job_name

    @staticmethod
    def _complete_checkpoint(s3: Any) -> bool:
        listed = s3.list_objects_v2(Bucket=stack.BUCKET, Prefix="artifacts/checkpoints/bert/")
        for item in listed.get("Contents", []):
            if item["Key"].endswith(f"/{MANIFEST}"):
                body = s3.get_object(Bucket=stack.BUCKET, Key=item["Key"])["Body"].read()
                if json.loads(body).get("complete", True):
                    return True
        return False


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("rehearsal")
    with stack.local_cluster(workdir, extra_overlay=BERT_OVERLAY) as cluster:
        preemption = Preemption()
        result = stack.run_smoke(cluster, titles=600, deadline_s=2400,
                                 while_running=preemption)
        with mock.patch.dict(os.environ, cluster.process_env):
            yield cluster, result, preemption


def _steps(result: stack.RehearsalResult) -> dict[str, list[dict[str, Any]]]:
    by_step: dict[str, list[dict[str, Any]]] = {}
    for job in result.jobs:
        if job["step"]:
            by_step.setdefault(job["step"], []).append(job)
    return by_step


def test_the_smoke_test_passes_with_every_step_as_a_job(rehearsal):
    cluster, result, _ = rehearsal
    assert result.exit_code == 0, result.smoke_log[-4000:]
    assert '"new_versions": {"trending-now-xgboost": [1], "trending-now-bert": [1]}' \
        in result.smoke_log
    settings = load_settings("staging", cluster.config_dir)
    from trending_assets import definitions

    steps = _steps(result)
    expected = {a.node_def.name for a in definitions.ASSETS} - {"xgboost_hyperparameters"}
    assert expected <= set(steps), sorted(expected - set(steps))
    for step, jobs in steps.items():
        pod = settings.k8s.steps.get(step, settings.k8s.default_step)
        final = jobs[-1]
        assert final["exit_code"] == 0, (step, final)
        assert final["image"] == stack.IMAGE, step  # the image DAGSTER_CURRENT_IMAGE named
        assert final["resources"]["requests"] == pod.requests.model_dump(), step
    print("\n" + result.table())


def test_the_bert_job_asks_for_the_gpu_pool(rehearsal):
    cluster, result, _ = rehearsal
    settings = load_settings("staging", cluster.config_dir)
    bert = _steps(result)["bert_model"][-1]
    assert bert["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert bert["node_selector"] == {"trending-now/node-pool": "gpu"}
    assert {t["key"] for t in bert["tolerations"]} >= {"nvidia.com/gpu", "trending-now/spot"}
    others = [j for j in result.jobs if j["step"] not in (None, "bert_model")]
    assert others and not [j for j in others if "nvidia.com/gpu" in j["resources"]["limits"]]
    assert settings.k8s.steps["bert_model"].gpus == 1


def test_a_killed_bert_pod_is_retried_as_a_new_job_that_resumes(rehearsal):
    cluster, result, preemption = rehearsal
    assert preemption.killed, "the bert_model pod was never seen training with a checkpoint"
    bert_jobs = _steps(result)["bert_model"]
    assert [j["killed"] for j in bert_jobs] == [True, False]
    assert bert_jobs[0]["job"] == preemption.killed and bert_jobs[0]["exit_code"] == 137
    assert bert_jobs[1]["job"] == f"{preemption.killed}-1"  # dagster-k8s's retry Job name
    retry_log = cluster.kube.pod_log(bert_jobs[1]["job"])
    resumed = re.search(r"resumed_from_step=(\d+)", retry_log)
    assert resumed and int(resumed.group(1)) >= 5, retry_log[-3000:]

    # The model the retry stored equals a run that was never interrupted, on the same
    # splits with the same parameters, within 1e-5 (CPU).
    settings = load_settings("staging", cluster.config_dir)
    store = storage_resources(settings).artifacts.open()
    splits, _ = read_version(store, stored_base(["data_splits"]), TitleSplits)
    stored, _ = read_version(store, stored_base(["bert_model"]), BertGenreModel)
    params = settings.bert
    straight = train_bert(splits.texts("train"), splits.labels("train"), splits.texts("val"),
                          splits.labels("val"), splits.genres, params).model
    ours = stored.model.state_dict()
    theirs = straight.model.state_dict()
    assert ours.keys() == theirs.keys()
    largest = max(float((ours[k].float() - theirs[k].float()).abs().max()) for k in ours)
    assert largest <= 1e-5, largest
    # Both attempts logged into one W&B run, whose id the Dagster run fixes.
    attempts = [p.name.split("-bert-", 1)[1] for p in
                (cluster.workdir / "wandb" / "wandb").glob("offline-run-*-bert-*")]
    assert len(attempts) == 2 and len(set(attempts)) == 1, attempts


def test_the_registry_in_s3_holds_the_versions(rehearsal):
    cluster, _, _ = rehearsal
    registry = storage_resources(load_settings("staging", cluster.config_dir)).registry.open()
    for model in ("trending-now-xgboost", "trending-now-bert"):
        assert registry.versions(model) == [1]
        assert registry.aliases(model) == {"staging": 1, "production": 1}


@contextmanager
def fresh_definitions_module() -> Iterator[None]:
    """Load the code location as its server does, in this (staging) environment: not the
    trending_assets.definitions another test module imported earlier (with APP_ENV unset,
    whose sensors start stopped)."""
    import trending_assets

    previous = sys.modules.pop("trending_assets.definitions", None)
    try:
        yield
    finally:
        if previous is not None:
            sys.modules["trending_assets.definitions"] = previous
            trending_assets.definitions = previous


def test_a_sensor_run_is_launched_as_a_run_pod_with_the_image(rehearsal):
    """A file in today's landing folder; one iteration of the daemon's sensor loop over the
    code location (whose image the chart passes as DAGSTER_CURRENT_IMAGE) and one of its run
    queue; the K8sRunLauncher starts the run as a run pod, which starts its step as a Job."""
    cluster, _, _ = rehearsal
    from trending_assets.rehearsal.smoke import put_sample

    settings = load_settings("staging", cluster.config_dir)
    put_sample(settings, 150, "sensor.csv")
    instance = DagsterInstance.get()
    before = {j["job"] for j in cluster.kube.job_summaries()}
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(module_name="trending_assets.definitions"),
        location_name="trending_assets", container_image=stack.IMAGE)
    with fresh_definitions_module(), create_test_daemon_workspace_context(
            InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        list(execute_sensor_iteration(workspace, logging.getLogger("SensorDaemon"),
                                      threadpool_executor=None,
                                      submit_threadpool_executor=None))
        runs = instance.get_runs(RunsFilter(tags={"dagster/sensor_name": "landing_sensor"}))
        assert len(runs) == 1, [r.tags for r in instance.get_runs()]
        # The run queue (QueuedRunCoordinator, as in the chart): one daemon iteration hands
        # the queued run to the K8sRunLauncher.
        list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))

    def done() -> bool:
        return instance.get_run_by_id(runs[0].run_id).is_finished

    stack.wait_for(done, 600, "the sensor's run")
    assert instance.get_run_by_id(runs[0].run_id).status == DagsterRunStatus.SUCCESS

    def new_jobs() -> list[dict[str, Any]]:
        return [j for j in cluster.kube.job_summaries() if j["job"] not in before]

    # The run pod's process exits a moment after it records the run's success.
    stack.wait_for(lambda: all(j["exit_code"] is not None for j in new_jobs()), 120,
                   "the run pod's exit")
    new = new_jobs()
    assert sorted(j["component"] or "" for j in new) == ["run_worker", "step_worker"], new
    assert {j["image"] for j in new} == {stack.IMAGE}
    assert [j["exit_code"] for j in new] == [0, 0], new


def test_the_stand_in_refuses_an_invalid_manifest(tmp_path: Path):
    import kubernetes

    kube = KubeStandIn(tmp_path, {}, image_env(REPO_ROOT / "Dockerfile"), {}).start()
    try:
        config = kube.write_kubeconfig(tmp_path / "kubeconfig", "ns")
        api = kubernetes.client.BatchV1Api(
            kubernetes.config.new_client_from_config(str(config)))
        job = stack.code_location_pod("broken", ["true"])
        job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": "8"}
        with pytest.raises(kubernetes.client.ApiException) as refused:
            api.create_namespaced_job("ns", job)
        assert refused.value.status == 422
        assert "resources.limits" in refused.value.body
        assert kube.jobs == {}
    finally:
        kube.stop()


def test_the_image_env_comes_from_the_dockerfile():
    env = image_env(REPO_ROOT / "Dockerfile")
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert env["HF_HUB_OFFLINE"] == "1"
    launcher = yaml.safe_load(stack.instance_yaml(Path("/k")))["run_launcher"]
    assert (launcher["class"], launcher["config"]["kubeconfig_file"]) == ("K8sRunLauncher", "/k")
