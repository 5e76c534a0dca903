"""helm/values*.yaml against the official chart's structure (dagster/dagster 1.13.27).

No helm binary here (ci.yml runs `helm lint` and `helm template` against the pinned chart).
These tests check, per file and merged as Helm merges them, the keys we set against the
structure the chart documents (its values schema, written down below for those keys),
the Kubernetes parts against the Kubernetes schema, and that no credential is written as
a literal value anywhere.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster._config.field_utils import Shape
from dagster._core.instance.config import dagster_instance_config_schema

from trending_assets.settings import deep_merge, load_settings

REPO = Path(__file__).resolve().parents[1]
HELM = REPO / "helm"
ENVIRONMENTS = ("staging", "production")
CHART_VERSION = "1.13.27"

# --- the chart's documented structure for the keys we set (values.schema.json, 1.13.x) ---
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_K8S_OBJECT = {"type": "object"}  # checked against the Kubernetes schema separately
_SECRET_REFS = {"type": "array", "items": {
    "type": "object", "properties": {"name": {"type": "string", "minLength": 1},
                                     "optional": {"type": "boolean"}},
    "required": ["name"], "additionalProperties": False}}
_IMAGE = {"type": "object", "properties": {
    "repository": {"type": "string", "minLength": 1}, "tag": {"type": ["string", "integer"]},
    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}},
    "required": ["repository", "pullPolicy"], "additionalProperties": False}
_USER_DEPLOYMENT = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1}, "image": _IMAGE, "port": {"type": "integer"},
    "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
    "codeServerArgs": {"type": "array", "items": {"type": "string"}},
    "includeConfigInLaunchedRuns": {"type": "object", "properties": {
        "enabled": {"type": "boolean"}}, "required": ["enabled"]},
    "env": {"oneOf": [_STR_MAP, {"type": "array", "items": _K8S_OBJECT}]},
    "envConfigMaps": _SECRET_REFS, "envSecrets": _SECRET_REFS, "annotations": _STR_MAP,
    "nodeSelector": _STR_MAP, "affinity": _K8S_OBJECT,
    "tolerations": {"type": "array", "items": _K8S_OBJECT},
    "podSecurityContext": _K8S_OBJECT, "securityContext": _K8S_OBJECT,
    "resources": _K8S_OBJECT, "livenessProbe": _K8S_OBJECT, "readinessProbe": _K8S_OBJECT,
    "startupProbe": _K8S_OBJECT, "labels": _STR_MAP,
    "volumeMounts": {"type": "array"}, "volumes": {"type": "array"},
    "schedulerName": {"type": "string"}},
    "required": ["name", "image", "port"], "additionalProperties": False}
_K8S_RUN_LAUNCHER = {"type": "object", "properties": {
    "image": _IMAGE, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "jobNamespace": {"type": ["string", "null"]}, "loadInclusterConfig": {"type": "boolean"},
    "kubeconfigFile": {"type": ["string", "null"]}, "envConfigMaps": _SECRET_REFS,
    "envSecrets": _SECRET_REFS, "envVars": {"type": "array", "items": {"type": "string"}},
    "volumeMounts": {"type": "array"}, "volumes": {"type": "array"}, "labels": _STR_MAP,
    "failPodOnRunFailure": {"type": "boolean"}, "resources": _K8S_OBJECT,
    "schedulerName": {"type": "string"}, "securityContext": _K8S_OBJECT,
    "runK8sConfig": {"type": "object", "properties": {
        k: _K8S_OBJECT for k in ("containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                 "jobSpecConfig", "jobMetadata")},
        "additionalProperties": False}},
    "additionalProperties": False}
_WORKERS = {"type": "object", "properties": {
    "useThreads": {"type": "boolean"}, "numWorkers": {"type": "integer", "minimum": 1},
    "numSubmitWorkers": {"type": "integer", "minimum": 1}},
    "additionalProperties": False}
_DAEMON = {"type": "object", "properties": {
    "enabled": {"type": "boolean"}, "image": _IMAGE, "heartbeatTolerance": {"type": "integer"},
    "runCoordinator": {"type": "object", "properties": {
        "enabled": {"type": "boolean"},
        "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
        "config": {"type": "object", "properties": {"queuedRunCoordinator": {
            "type": "object", "properties": {
                "maxConcurrentRuns": {"type": "integer"}, "tagConcurrencyLimits": {"type": "array"},
                "dequeueIntervalSeconds": {"type": "integer"},
                "dequeueNumWorkers": {"type": "integer"}, "dequeueUseThreads": {"type": "boolean"}},
            "additionalProperties": False}}}},
        "additionalProperties": False},
    "env": {"oneOf": [_STR_MAP, {"type": "array"}]}, "envConfigMaps": _SECRET_REFS,
    "envSecrets": _SECRET_REFS, "deploymentLabels": _STR_MAP, "labels": _STR_MAP,
    "nodeSelector": _STR_MAP, "affinity": _K8S_OBJECT, "tolerations": {"type": "array"},
    "podSecurityContext": _K8S_OBJECT, "securityContext": _K8S_OBJECT,
    "resources": _K8S_OBJECT, "livenessProbe": _K8S_OBJECT, "readinessProbe": _K8S_OBJECT,
    "startupProbe": _K8S_OBJECT, "annotations": _STR_MAP,
    "runMonitoring": {"type": "object", "properties": {
        "enabled": {"type": "boolean"}, "startTimeoutSeconds": {"type": "integer"},
        "cancelTimeoutSeconds": {"type": "integer"}, "maxRuntimeSeconds": {"type": "integer"},
        "pollIntervalSeconds": {"type": "integer"}, "maxResumeRunAttempts": {"type": "integer"},
        "freeSlotsAfterRunEndSeconds": {"type": "integer"}},
        "additionalProperties": False},
    "runRetries": {"type": "object", "properties": {
        "enabled": {"type": "boolean"}, "maxRetries": {"type": "integer"},
        "retryOnAssetOrOpFailure": {"type": "boolean"}}, "additionalProperties": False},
    "sensors": _WORKERS, "schedules": _WORKERS, "schedulerName": {"type": "string"},
    "volumeMounts": {"type": "array"}, "volumes": {"type": "array"}},
    "additionalProperties": False}
CHART_VALUES_SCHEMA = {
    "type": "object",
    "properties": {
        "global": {"type": "object", "properties": {
            "postgresqlSecretName": {"type": "string", "minLength": 1},
            "dagsterHome": {"type": "string"}, "serviceAccountName": {"type": "string"},
            "celeryConfigSecretName": {"type": "string"}}, "additionalProperties": False},
        "generatePostgresqlPasswordSecret": {"type": "boolean"},
        "telemetry": {"type": "object", "properties": {"enabled": {"type": "boolean"}},
                      "additionalProperties": False},
        "dagsterWebserver": {"type": "object", "properties": {"resources": _K8S_OBJECT}},
        "dagster-user-deployments": {"type": "object", "properties": {
            "enabled": {"type": "boolean"}, "enableSubchart": {"type": "boolean"},
            "imagePullSecrets": _SECRET_REFS,
            "deployments": {"type": "array", "items": _USER_DEPLOYMENT, "minItems": 1}},
            "additionalProperties": False},
        "runLauncher": {"type": "object", "properties": {
            "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
            "config": {"type": "object", "properties": {"k8sRunLauncher": _K8S_RUN_LAUNCHER}}},
            "additionalProperties": False},
        "postgresql": {"type": "object", "properties": {
            "enabled": {"type": "boolean"}, "image": _IMAGE,
            "postgresqlHost": {"type": "string"}, "postgresqlUsername": {"type": "string"},
            "postgresqlPassword": {"type": "string"}, "postgresqlDatabase": {"type": "string"},
            "postgresqlParams": {"type": "object"}, "postgresqlScheme": {"type": "string"},
            "service": {"type": "object", "properties": {"port": {"type": "integer"}},
                        "required": ["port"]},
            # passed to the bundled PostgreSQL subchart: the Secret holding its password
            "existingSecret": {"type": "string", "minLength": 1}},
            "additionalProperties": False},
        "dagsterDaemon": _DAEMON,
        "computeLogManager": {"type": "object", "properties": {
            "type": {"enum": ["NoOpComputeLogManager", "AzureBlobComputeLogManager",
                              "GCSComputeLogManager", "S3ComputeLogManager",
                              "CustomComputeLogManager"]},
            "config": {"type": "object", "properties": {"s3ComputeLogManager": {
                "type": "object", "required": ["bucket"], "properties": {
                    "bucket": {"type": "string"}, "prefix": {"type": "string"},
                    "region": {"type": "string"}, "endpointUrl": {"type": "string"}}}}}},
            "additionalProperties": False},
        "additionalInstanceConfig": {"type": "object"},
    },
    "additionalProperties": False,  # only the sections above are set by our files
}


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((HELM / name).read_text())


def chart_values(env: str) -> dict[str, Any]:
    """helm/values.yaml with the environment file on top, as Helm merges them: mappings
    merge key by key, lists (such as the deployments) are replaced whole."""
    return deep_merge(load_values("values.yaml"), load_values(f"values-{env}.yaml"))


def _validate(values: dict[str, Any], where: str) -> None:
    errors = sorted(jsonschema.Draft7Validator(CHART_VALUES_SCHEMA).iter_errors(values),
                    key=lambda e: list(e.path))
    if errors:
        pytest.fail(f"{where}:\n" + "\n".join(
            f"  {'.'.join(map(str, e.path)) or '<top>'}: {e.message}" for e in errors))


# --- credentials ----------------------------------------------------------------------

CREDENTIAL_KEY = re.compile(r"password|secret|token|api_?key|access_?key|credential|webhook",
                            re.IGNORECASE)
# Keys that name a Secret (a reference), not hold one.
REFERENCE_KEY = re.compile(r"(secretname|existingsecret|envsecrets|secretkeyref|"
                           r"generatepostgresqlpasswordsecret)$", re.IGNORECASE)
SECRET_LOOKING_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|hooks\.slack\.com/services/|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"\b[0-9a-f]{40}\b|xox[abpr]-")


def literal_credentials(node: Any, path: str = "") -> list[str]:
    """Paths where a credential is written as a value instead of referenced."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if (CREDENTIAL_KEY.search(str(key)) and not REFERENCE_KEY.search(str(key))
                    and isinstance(value, str | int | float) and not isinstance(value, bool)
                    and str(value) != ""):
                found.append(where)
            found += literal_credentials(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += literal_credentials(item, f"{path}[{i}]")
    elif isinstance(node, str) and SECRET_LOOKING_VALUE.search(node):
        found.append(path)
    return found


# --- tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["values.yaml", "values-staging.yaml", "values-production.yaml"])
def test_each_values_file_follows_the_chart_structure(name):
    _validate(load_values(name), f"helm/{name}")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_merged_values_deploy_our_code_location_with_the_k8s_run_launcher(env):
    values = chart_values(env)
    _validate(values, f"helm/values.yaml + helm/values-{env}.yaml")
    users = values["dagster-user-deployments"]
    assert users["enabled"] and users["enableSubchart"]
    [deployment] = users["deployments"]
    assert deployment["name"] == "trending-assets"
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "trending_assets.definitions"]
    assert deployment["port"] == 3030
    assert deployment["env"]["APP_ENV"] == env
    assert load_settings(env).executor == "k8s"
    assert {s["name"] for s in deployment["envSecrets"]} == {
        "trending-now-aws", "trending-now-wandb", "trending-now-alerts"}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["jobNamespace"] == f"trending-now-{env}"
    assert launcher["envSecrets"] == deployment["envSecrets"]
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] and daemon["sensors"]["useThreads"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # Postgres password only by reference: never generated from a value in these files.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_environment_repeats_the_deployment_entry_without_drift(env):
    """Helm replaces lists whole, so each environment file repeats the deployment entry:
    only the environment-specific keys may differ from helm/values.yaml."""
    [base] = load_values("values.yaml")["dagster-user-deployments"]["deployments"]
    [entry] = load_values(f"values-{env}.yaml")["dagster-user-deployments"]["deployments"]
    specific = {"env", "resources", "image"}
    assert {k: v for k, v in entry.items() if k not in specific} == \
        {k: v for k, v in base.items() if k not in specific}
    assert entry["image"]["pullPolicy"] == base["image"]["pullPolicy"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_kubernetes_parts_pass_the_kubernetes_schema(env):
    values = chart_values(env)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    pods = {
        "user deployment": {"resources": deployment["resources"],
                            "nodeSelector": deployment["nodeSelector"],
                            "tolerations": deployment["tolerations"],
                            "envFrom": [{"secretRef": s} for s in deployment["envSecrets"]]},
        "webserver": {"resources": values["dagsterWebserver"]["resources"]},
        "daemon": {"resources": values["dagsterDaemon"]["resources"]},
        "run pod": {"resources": launcher["runK8sConfig"]["containerConfig"]["resources"]},
    }
    for where, container in pods.items():
        node_fields = {k: container.pop(k) for k in ("nodeSelector", "tolerations")
                       if k in container}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
               "spec": {"containers": [{"name": "c", "image": "i", **container}],
                        **node_fields}}
        try:
            kubernetes_validate.validate(pod, "1.33.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{env} {where}: {exc.message}")


def test_additional_instance_config_is_valid_dagster_instance_config():
    extra = load_values("values.yaml")["additionalInstanceConfig"]
    assert extra["freshness"] == {"enabled": True}  # the daemon's freshness loop
    result = process_config(Shape(dagster_instance_config_schema()), extra)
    assert result.success, result.errors


@pytest.mark.parametrize("name", ["values.yaml", "values-staging.yaml", "values-production.yaml"])
def test_no_plaintext_credentials(name):
    assert literal_credentials(load_values(name)) == []


def test_the_credential_check_finds_literal_secrets():
    leaky = {"postgresql": {"postgresqlPassword": "hunter2", "existingSecret": "pg"},
             "deployments": [{"env": {"WANDB_API_KEY": "abc", "APP_ENV": "staging"},
                              "envSecrets": [{"name": "ok"}]}],
             "alerts": {"url": "https://hooks.slack.com/services/T0/B0/x"}}
    assert literal_credentials(leaky) == ["postgresql.postgresqlPassword",
                                          "deployments[0].env.WANDB_API_KEY", "alerts.url"]


def test_the_structure_check_rejects_a_misplaced_key():
    values = chart_values("staging")
    values["runLauncher"]["config"]["k8sRunLauncher"]["env_secrets"] = ["trending-now-aws"]
    assert list(jsonschema.Draft7Validator(CHART_VALUES_SCHEMA).iter_errors(values))


def test_the_chart_version_is_the_dagster_version():
    assert version("dagster") == CHART_VERSION
    for workflow in ("ci.yml", "cd_staging.yml", "cd_production.yml"):
        text = (REPO / ".github" / "workflows" / workflow).read_text()
        assert f'DAGSTER_CHART_VERSION: "{CHART_VERSION}"' in text, workflow
    for name in ("values.yaml",):
        assert f"version {CHART_VERSION}" in (HELM / name).read_text()
