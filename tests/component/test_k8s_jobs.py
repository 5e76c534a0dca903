"""The Kubernetes Job of every step, exactly as the k8s_job_executor would submit it.

No cluster here: the executor is created from the staging/production Definitions (the
configured k8s_job_executor, its configuration resolved by Dagster's config mapping), on
an instance whose K8sRunLauncher is configured the way the Helm chart configures it from
helm/values.yaml. Its step handler builds each Job with dagster-k8s's own code; only the
Kubernetes API client is replaced by a recorder, and the request it receives is asserted:
resources, GPU limit, node selector and tolerations from configs/, and a manifest that
passes the Kubernetes schema (kubernetes-validate).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster import DagsterInstance, reconstructable
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.job_definition import JobDefinition
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.client import DagsterKubernetesClient

from tests.helpers.helm import chart_values
from trending_assets import definitions
from trending_assets.k8s import executor_config, step_pod
from trending_assets.settings import ConfigError, Settings, load_settings

IMAGE = "ghcr.io/trending-now/trending-assets:0123abc"
# The oldest version a managed cluster still runs, and the newest schema there is.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
JOBS = ("ingest_landing_file", "train_models", "tune_xgboost")
SECRETS = {"trending-now-aws", "trending-now-wandb", "trending-now-alerts"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY|WEBHOOK")


def chart_run_launcher(values: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """The K8sRunLauncher config the chart writes into the instance's dagster.yaml."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher.get("runK8sConfig", {})
    return {
        "instance_config_map": "dagster-instance",
        "service_account_name": "dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "job_namespace": launcher["jobNamespace"],
        "image_pull_policy": launcher["imagePullPolicy"],
        "env_config_maps": ["dagster-pipeline-env",
                            *(c["name"] for c in launcher["envConfigMaps"])],
        "env_secrets": [s["name"] for s in launcher["envSecrets"]],
        "labels": launcher["labels"],
        "fail_pod_on_run_failure": launcher["failPodOnRunFailure"],
        "run_k8s_config": {"container_config": run_k8s.get("containerConfig", {}),
                           "job_spec_config": run_k8s.get("jobSpecConfig", {})},
        # In the cluster: load_incluster_config. Here a kubeconfig nothing ever connects to.
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }


def code_location_container_context(values: dict[str, Any]) -> dict[str, Any]:
    """What the chart passes from the user deployment to its runs
    (includeConfigInLaunchedRuns): the deployment's secrets and pull policy."""
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    return {"k8s": {"env_secrets": [s["name"] for s in deployment["envSecrets"]],
                    "image_pull_policy": deployment["image"]["pullPolicy"]}}


def write_kubeconfig(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    return path


def submitted_jobs(env: str, tmp_path: Path, settings: Settings | None = None,
                   origin_image: str | None = IMAGE) -> dict[str, dict[str, Any]]:
    """step key -> the serialized V1Job the executor submits, for every step of both jobs.
    `origin_image` is the image the run's code origin carries (None: a run started by
    `execute_job` on a reconstructable job, as the CLI does)."""
    settings = settings or load_settings(env)
    defs = definitions.build_definitions(settings)
    values = chart_values(env)
    launcher = chart_run_launcher(values, write_kubeconfig(tmp_path / "kubeconfig"))
    recorder = mock.MagicMock(name="DagsterKubernetesClient")
    # In the cluster the alert webhook URLs come from the `trending-now-alerts` Secret.
    secret_env = {c.url_env: "https://hooks.invalid/test" for c in settings.alerts.channels
                  if c.url_env}
    jobs: dict[str, dict[str, Any]] = {}
    run_launcher = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher}
    with instance_for_test(overrides={"run_launcher": run_launcher}) as instance, \
            mock.patch.object(DagsterKubernetesClient, "production_client",
                              return_value=recorder), \
            mock.patch.dict(os.environ, secret_env):
        for job_name in JOBS:
            job_def = defs.resolve_job_def(job_name)
            for step_key, body in _launch_every_step(job_def, instance, values,
                                                     origin_image).items():
                jobs[step_key] = kubernetes.client.ApiClient().sanitize_for_serialization(body)
        namespaces = {c.kwargs["namespace"] for c in recorder.create_namespaced_job_with_retries
                      .call_args_list}
    assert namespaces == {values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]}
    return jobs


def _launch_every_step(job_def: JobDefinition, instance: DagsterInstance,
                       values: dict[str, Any], origin_image: str | None) -> dict[str, Any]:
    assert job_def.executor_def.name == "k8s"
    # The configured executor's config, resolved as a run resolves it (defaults filled in).
    resolved = job_def.executor_def.apply_config_mapping({})
    assert resolved.success, resolved.errors
    job = InMemoryJob(job_def)
    executor = job_def.executor_def.executor_creation_fn(InitExecutorContext(
        job=job, executor_def=job_def.executor_def,
        executor_config=resolved.value["config"], instance=instance))
    origin = reconstructable(definitions.training_job_def).get_python_origin()
    origin = origin._replace(repository_origin=origin.repository_origin._replace(
        container_image=origin_image,
        container_context=code_location_container_context(values)))
    run = create_run_for_test(instance, job_name=job_def.name, job_code_origin=origin)
    plan = create_execution_plan(job)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=job, dagster_run=run, instance=instance, execution_plan=plan,
                           raise_on_error=True, retry_mode=RetryMode.DISABLED),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor, output_capture=None)
    client = DagsterKubernetesClient.production_client()
    bodies = {}
    for step in plan.steps:
        client.create_namespaced_job_with_retries.reset_mock()
        context = StepHandlerContext(
            instance=instance, plan_context=plan_context, steps=[step],
            execute_step_args=ExecuteStepArgs(origin, run.run_id, [step.key]))
        list(executor._step_handler.launch_step(context))
        bodies[step.key] = client.create_namespaced_job_with_retries.call_args.kwargs["body"]
    return bodies


@pytest.fixture(scope="module", params=["staging", "production"])
def env_jobs(request, tmp_path_factory) -> tuple[Settings, dict[str, dict[str, Any]]]:
    env = request.param
    return load_settings(env), submitted_jobs(env, tmp_path_factory.mktemp(env))


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_every_asset_of_the_graph_gets_a_job(env_jobs):
    _, jobs = env_jobs
    asset_steps = {a.node_def.name for a in definitions.ASSETS}
    assert asset_steps <= set(jobs), f"no Job for {sorted(asset_steps - set(jobs))}"


def test_each_job_has_the_resources_pool_and_lifetime_from_config(env_jobs):
    settings, jobs = env_jobs
    k8s = settings.k8s
    for step_key, job in jobs.items():
        pod = step_pod(k8s, step_key)
        container = _container(job)
        expected_limits = pod.limits.model_dump()
        if pod.gpus:
            expected_limits[k8s.gpu_resource] = str(pod.gpus)
        assert container["resources"] == {"requests": pod.requests.model_dump(),
                                          "limits": expected_limits}, step_key
        spec = job["spec"]["template"]["spec"]
        if pod.pool is None:
            assert "nodeSelector" not in spec and "tolerations" not in spec, step_key
        else:
            pool = k8s.node_pools[pod.pool]
            assert spec["nodeSelector"] == pool.node_selector, step_key
            assert spec["tolerations"] == [t.model_dump(exclude_none=True)
                                           for t in pool.tolerations], step_key
        assert job["spec"]["ttlSecondsAfterFinished"] == k8s.job_ttl_seconds
        assert job["spec"]["backoffLimit"] == k8s.backoff_limit
        assert job["spec"].get("activeDeadlineSeconds") == pod.deadline_seconds
        assert container["image"] == IMAGE
        assert container["args"][:3] == ["dagster", "api", "execute_step"]


def test_bert_runs_on_the_gpu_pool_and_nothing_else_asks_for_a_gpu(env_jobs):
    settings, jobs = env_jobs
    bert = jobs["bert_model"]
    container, spec = _container(bert), bert["spec"]["template"]["spec"]
    gpus = settings.k8s.steps["bert_model"].gpus
    assert gpus >= 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert spec["nodeSelector"] == {"trending-now/node-pool": "gpu"}
    tolerated = {(t["key"], t.get("value"), t["effect"]) for t in spec["tolerations"]}
    assert ("nvidia.com/gpu", None, "NoSchedule") in tolerated
    assert ("cloud.google.com/gke-spot", "true", "NoSchedule") in tolerated  # spot/preemptible
    assert ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule") in tolerated
    # NCCL and data-loader workers need a /dev/shm larger than the runtime's default.
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    shm = settings.k8s.steps["bert_model"].shm_size
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}} in spec["volumes"]
    # torchrun starts one worker per GPU of this pod.
    assert settings.bert.processes == gpus
    others = {k: _container(j)["resources"]["limits"] for k, j in jobs.items() if k != "bert_model"}
    assert not [k for k, limits in others.items() if "nvidia.com/gpu" in limits]
    assert _container(jobs["xgboost_model"])["resources"]["limits"]["cpu"] == "8"
    assert _container(jobs["data_splits"])["resources"]["requests"] == {"cpu": "250m",
                                                                        "memory": "512Mi"}


def test_secrets_reach_every_step_pod_by_reference_only(env_jobs):
    _, jobs = env_jobs
    for step_key, job in jobs.items():
        container = _container(job)
        secret_refs = {s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s}
        assert secret_refs >= SECRETS, step_key
        password = next(e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD")
        assert password == {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": "dagster-postgresql-secret", "key": "postgresql-password"}}}
        literal = [e["name"] for e in container["env"]
                   if CREDENTIAL_NAME.search(e["name"]) and "value" in e]
        assert not literal, f"{step_key}: credentials as literal values: {literal}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_the_kubernetes_schema(env_jobs, version):
    _, jobs = env_jobs
    for step_key, job in jobs.items():
        try:
            kubernetes_validate.validate(job, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{step_key}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_the_validator_rejects_a_broken_manifest(env_jobs):
    _, jobs = env_jobs
    broken = yaml.safe_load(yaml.safe_dump(jobs["bert_model"]))
    broken["spec"]["template"]["spec"]["tolerations"][0]["operator"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_a_step_name_that_is_not_in_the_graph_is_refused():
    k8s = load_settings("production").k8s
    misspelt = k8s.model_copy(update={"steps": {**k8s.steps, "bert_modle": k8s.default_step}})
    with pytest.raises(ConfigError, match="bert_modle is not a step of the asset graph"):
        executor_config(misspelt, [a.node_def.name for a in definitions.ASSETS])


@pytest.mark.parametrize(("overlay", "message"), [
    ({"k8s": {"steps": {"bert_model": {"pool": None}}}}, "names no pool"),
    ({"k8s": {"steps": {"bert_model": {"pool": "tpu"}}}}, "'tpu' is not in node_pools"),
    ({"k8s": {"steps": {"xgboost_model": {"requests": {"memory": "32Gi"}}}}},
     r"requests.memory \(32Gi\) is above limits.memory \(16Gi\)"),
    ({"k8s": {"node_pools": {"gpu": {"tolerations": [{"key": "x", "operator": "Exists",
                                                      "value": "y"}]}}}},
     "operator Exists takes no value"),
    ({"xgboost": {"device": "cuda"}}, "xgboost.device is 'cuda'"),
    ({"bert": {"processes": 1}},
     r"bert.processes \(1\) must equal k8s.steps.bert_model.gpus \(2\)"),
    ({"bert": {"processes": 3}, "k8s": {"steps": {"bert_model": {"gpus": 1}}}},
     r"bert.processes \(3\) must equal k8s.steps.bert_model.gpus \(1\)"),
])
def test_inconsistent_pod_settings_are_refused_with_the_key(overlay, message):
    with pytest.raises(ConfigError, match=message):
        load_settings("production", overrides=overlay)


def test_production_trains_bert_on_two_gpus_with_two_workers():
    settings = load_settings("production")
    assert settings.k8s.steps["bert_model"].gpus == settings.bert.processes == 2


def test_the_local_environment_keeps_the_multiprocess_executor():
    executor = definitions.build_executor(load_settings("local"))
    assert executor is not None and executor.name == "multiprocess"


def test_a_cli_run_in_a_pod_gives_every_step_job_the_pods_image(tmp_path, monkeypatch):
    """`cli run` in the code location's pod executes a reconstructable job, whose origin has
    no image; the chart sets DAGSTER_CURRENT_IMAGE in that pod, and every step Job runs it
    (before, the executor raised "No image included in either executor config or the job")."""
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", IMAGE)
    settings = load_settings("staging")
    assert settings.k8s.image == IMAGE
    jobs = submitted_jobs("staging", tmp_path, settings, origin_image=None)
    assert {_container(job)["image"] for job in jobs.values()} == {IMAGE}


def test_configured_image_wins_and_no_image_is_refused_before_a_run(monkeypatch):
    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE", raising=False)
    settings = load_settings("staging", overrides={"k8s": {"image": "registry/app:1"}})
    config = definitions.build_executor(settings).apply_config_mapping({}).value["config"]
    assert config["job_image"] == "registry/app:1"
    assert "job_image" not in definitions.build_executor(load_settings("staging")) \
        .apply_config_mapping({}).value["config"]
    from trending_assets import cli

    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(ConfigError, match="no image for the step Jobs"):
        cli.run(force=False)


@pytest.mark.parametrize(("env", "gpus"), [("staging", "1"), ("production", "2")])
def test_bert_model_carries_its_gpu_pod_as_op_tags(env, gpus):
    """The GPU request is on the asset (dagster-k8s/config op tags, shown in the UI), equal
    to the executor's per-step config: one source, configs/."""
    settings = load_settings(env)
    defs = definitions.build_definitions(settings)
    tags = defs.get_assets_def("bert_model").op.tags
    tagged = json.loads(tags["dagster-k8s/config"])
    executor = defs.resolve_job_def("train_models").executor_def
    per_step = executor.apply_config_mapping({}).value["config"]["per_step_k8s_config"]
    # The resolved executor config adds empty defaults for the sections the tags leave out.
    assert {k: v for k, v in per_step["bert_model"].items() if v} == tagged
    assert tagged["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert tagged["pod_spec_config"]["node_selector"] == {"trending-now/node-pool": "gpu"}
    for name in ("xgboost_model", "tfidf_features", "data_splits"):
        assert "dagster-k8s/config" not in defs.get_assets_def(name).op.tags
