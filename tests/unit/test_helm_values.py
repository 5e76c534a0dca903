"""helm/values*.yaml rendered by the real Helm engine, and the instance they configure.

The engine is Helm's Go SDK (v4) as a shared library (PyPI helm-python-sdk, no helm binary);
the chart is the official Dagster chart in the folder named by TRENDING_HELM_CHART. `.ci/run`
and `make deploy-check` point it at the offline copy beside the repository
(../shared/vendor/dagster-chart, chart 1.12.19); ci.yml's helm job renders the pinned
1.13.27 chart online. Per environment the values files are merged as Helm merges `-f` files,
checked against the chart's values schema, linted, rendered, and every rendered manifest is
checked against the Kubernetes schema; then the rendered objects are read for what the
deployment relies on: the instance's dagster.yaml (validated by Dagster's own instance
config schema), the code location Deployment, the Postgres password by reference only, and
one training step per model family at a time (concurrency pools with limit 1).

Without TRENDING_HELM_CHART the chart tests skip (and fail under CI=true); the checks that
need no chart (the merge, the local instance's pools, credentials in the files) always run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.instance.config import PoolGranularity, dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.test_utils import create_run_for_test

from tests.helpers import REPO
from tests.helpers.helm import (
    HELM,
    chart_values,
    helm_merge,
    load_values,
    user_values,
    without_nulls,
)
from trending_assets.settings import load_settings

ENVIRONMENTS = ("staging", "production")
CHART_VERSION = "1.13.27"  # the pinned chart (ci.yml, cd_*.yml), equal to the dagster pin
CHART_ENV = "TRENDING_HELM_CHART"
RELEASE = "dagster"
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRETS = {"trending-now-aws", "trending-now-wandb", "trending-now-alerts"}
PG_SECRET = "dagster-postgresql-secret"
TRAINING_POOLS = ("train_reference", "train_xgboost", "train_bert")
# Keys our files pass to a bundled subchart that ships no values schema (Bitnami
# PostgreSQL 8.1.0 reads `existingSecret`); the rendered StatefulSet shows it takes effect.
SUBCHART_KEYS = {"postgresql.existingSecret"}


# --- values, merged the way Helm merges -f files (no chart needed) ---------------------

# --- credentials ----------------------------------------------------------------------

CREDENTIAL_KEY = re.compile(r"password|secret|token|api_?key|access_?key|credential|webhook",
                            re.IGNORECASE)
# Keys that name a Secret (a reference), not hold one.
REFERENCE_KEY = re.compile(r"(secretname|existingsecret|envsecrets|secretkeyref|password_secret|"
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


# --- keys the chart's schema declares ----------------------------------------------------
# The chart's schema leaves its top level (and a code location entry) open to unknown keys,
# so a misspelt section would be ignored silently; these keys are checked here instead.

def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branches(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, root)
    found = [schema]
    for combinator in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(combinator, []):
            found += _branches(sub, root)
    return found


def undeclared_keys(value: Any, schema: dict[str, Any], root: dict[str, Any],
                    path: str = "") -> list[str]:
    """Paths of keys in `value` that the schema neither declares nor allows as a map."""
    branches = _branches(schema, root)
    found: list[str] = []
    if isinstance(value, dict):
        declared: dict[str, Any] = {}
        maps = [b["additionalProperties"] for b in branches
                if isinstance(b.get("additionalProperties"), dict)]
        for branch in branches:
            declared.update(branch.get("properties", {}))
        if not declared and not maps:
            return []  # a free-form object (the chart passes it through as it is)
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in declared:
                found += undeclared_keys(item, declared[key], root, where)
            elif maps:
                found += undeclared_keys(item, maps[0], root, where)
            else:
                found.append(where)
    elif isinstance(value, list):
        items = [b["items"] for b in branches if isinstance(b.get("items"), dict)]
        for i, item in enumerate(value if items else []):
            found += undeclared_keys(item, items[0], root, f"{path}[{i}]")
    return found


# --- the chart and its renders ----------------------------------------------------------

def _chart_dir() -> Path:
    """The chart folder from TRENDING_HELM_CHART: skipped when unset, except under CI."""
    on_ci = os.environ.get("CI", "").lower() == "true"
    setting = os.environ.get(CHART_ENV, "")
    how = (f"set {CHART_ENV} to the Dagster chart folder, e.g. "
           f"{CHART_ENV}=$PWD/../shared/vendor/dagster-chart (`.ci/run` and "
           "`make deploy-check` set it when ../shared/vendor/dagster-chart exists)")
    if not setting:
        if on_ci:
            pytest.fail(f"CI=true but {CHART_ENV} is unset: {how}")
        pytest.skip(f"{CHART_ENV} is unset: {how}")
    folder = Path(setting)
    if not (folder / "Chart.yaml").is_file():
        pytest.fail(f"{CHART_ENV}={setting} is not a chart folder (no Chart.yaml): {how}")
    return folder


@pytest.fixture(scope="module")
def chart_dir() -> Path:
    return _chart_dir()


@pytest.fixture(scope="module")
def chart(chart_dir: Path) -> Iterator[Any]:
    with helm.Chart.load(chart_dir) as loaded:
        yield loaded


def namespace(env: str) -> str:
    return f"trending-now-{env}"


@pytest.fixture(scope="module")
def rendered(chart: Any) -> dict[str, list[dict[str, Any]]]:
    """env -> every object the chart renders for it (NOTES.txt left out)."""
    objects: dict[str, list[dict[str, Any]]] = {}
    for env in ENVIRONMENTS:
        manifests = chart.render(user_values(env), name=RELEASE, namespace=namespace(env))
        objects[env] = [doc for path, text in sorted(manifests.items())
                        if not path.endswith("NOTES.txt")
                        for doc in yaml.safe_load_all(text) if doc]
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def instance_yaml(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The dagster.yaml the chart mounts into the webserver, daemon and run pods."""
    return yaml.safe_load(find(objects, "ConfigMap", f"{RELEASE}-instance")["data"]
                          ["dagster.yaml"])


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            spec = obj["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}", container


# --- the merge (no chart) ----------------------------------------------------------------

def test_values_files_merge_as_helm_merges_them():
    base = {"a": {"keep": 1, "list": [1, 2], "drop": "x"}, "b": [{"name": "one"}]}
    overlay = {"a": {"list": [3], "drop": None, "new": True}, "b": [{"name": "two"}]}
    merged = helm_merge(base, overlay)
    assert merged == {"a": {"keep": 1, "list": [3], "drop": None, "new": True},
                      "b": [{"name": "two"}]}
    assert without_nulls(merged)["a"] == {"keep": 1, "list": [3], "new": True}
    assert base["a"]["list"] == [1, 2]  # the inputs are left as they were
    # The environment's deployment entry replaces the base one whole (a list).
    for env in ENVIRONMENTS:
        [entry] = chart_values(env)["dagster-user-deployments"]["deployments"]
        assert entry["env"] == {"APP_ENV": env}


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


# --- the chart's schema, lint and render -------------------------------------------------

def test_the_chart_is_the_official_dagster_chart(chart):
    assert chart.name == "dagster"
    assert chart.version in {"1.12.19", CHART_VERSION}  # offline copy, or the pinned chart
    assert {"dagster-user-deployments", "postgresql"} <= {d["name"] for d in chart.dependencies}


def test_a_null_deletes_the_charts_default(chart):
    """Helm coalesces our values over the chart's: a null removes the chart's key."""
    assert "nodeSelector" in chart.values["dagsterWebserver"]
    values = helm_merge(user_values("staging"), {"dagsterWebserver": {"nodeSelector": None}})
    coalesced = chart.merge_values(values)
    assert "nodeSelector" not in coalesced["dagsterWebserver"]
    assert coalesced["dagsterWebserver"]["resources"] == \
        chart_values("staging")["dagsterWebserver"]["resources"]


@pytest.mark.parametrize("name", ["values.yaml", "values-staging.yaml", "values-production.yaml"])
def test_each_values_file_passes_the_chart_schema(chart, name):
    chart.validate_schema(load_values(name))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_merged_values_pass_the_chart_schema_and_lint(chart, chart_dir, env):
    values = user_values(env)
    chart.validate_schema(values)
    chart.validate_schema(chart.merge_values(values))  # what an install validates
    report = helm.lint(chart_dir, values, strict=True, namespace=namespace(env),
                       kube_version="v1.30.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_key_we_set_is_declared_by_the_chart(chart, env):
    schema = chart.schema
    assert set(undeclared_keys(chart_values(env), schema, schema)) == SUBCHART_KEYS


@pytest.mark.parametrize(("overlay", "field", "message"), [
    ({"dagsterWebserver": {"replicaCount": "two"}}, "/dagsterWebserver/replicaCount",
     "got string, want integer"),
    ({"dagsterWebserver": {"replicas": 2}}, "/dagsterWebserver",
     "additional properties 'replicas' not allowed"),
    ({"concurrency": {"pools": {"default_limit": 1}}}, "/concurrency/pools",
     "additional properties 'default_limit' not allowed"),
], ids=["wrong-type", "unknown-key", "instance-spelling"])
def test_a_wrong_value_is_refused_with_the_field_named(chart, tmp_path, overlay, field,
                                                       message):
    bad = tmp_path / "values-bad.yaml"
    bad.write_text(yaml.safe_dump(overlay))
    values = user_values("staging", bad)
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.validate_schema(values)
    assert f"at '{field}': {message}" in str(refused.value)
    with pytest.raises(helm.HelmValuesError, match=re.escape(field)):
        chart.render(values, name=RELEASE, namespace=namespace("staging"))


@pytest.mark.parametrize(("overlay", "where"), [
    ({"concurency": {"enabled": True}}, "concurency"),
    ({"dagster-user-deployments": {"deployments": [
        {**chart_values("staging")["dagster-user-deployments"]["deployments"][0],
         "envSecret": [{"name": "trending-now-aws"}]}]}},
     "dagster-user-deployments.deployments[0].envSecret"),
], ids=["section", "code-location"])
def test_a_misspelt_key_the_chart_would_ignore_is_named(chart, tmp_path, overlay, where):
    bad = tmp_path / "values-bad.yaml"
    bad.write_text(yaml.safe_dump(overlay))
    values = without_nulls(user_values("staging", bad))
    chart.validate_schema(values)  # the chart's schema lets these through
    assert where in undeclared_keys(values, chart.schema, chart.schema)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_rendered_manifest_is_valid_kubernetes(rendered, env):
    objects = rendered[env]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 3  # webserver, daemon, our code location
    # staging: the bundled PostgreSQL; production: the managed one, nothing rendered for it
    assert kinds.count("StatefulSet") == (1 if env == "staging" else 0)
    invalid = []
    for kubernetes_version in KUBERNETES_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, kubernetes_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                invalid.append(f"{kubernetes_version} {obj['kind']}/{obj['metadata']['name']}: "
                               f"{exc.message}")
    assert invalid == []
    print(f"{env}: {len(objects)} manifests rendered, 0 invalid for Kubernetes "
          f"{', '.join(KUBERNETES_VERSIONS)}")


# --- what the deployment relies on, read from the rendered objects -----------------------

def validated_instance_config(dagster_yaml: dict[str, Any], folder: Path) -> dict[str, Any]:
    """dagster.yaml through Dagster's own instance loader (its schema, and the rules that
    forbid e.g. a run-queue limit beside `concurrency`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml))
    config, _ = dagster_instance_config(str(folder))
    return dict(config)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_instance_config_map(rendered, env, tmp_path):
    values = chart_values(env)
    instance = validated_instance_config(instance_yaml(rendered[env]), tmp_path)

    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert launcher["config"]["job_namespace"] == namespace(env)
    assert set(launcher["config"]["env_secrets"]) == SECRETS
    assert launcher["config"]["postgres_password_secret"] == PG_SECRET
    assert launcher["config"]["run_k8s_config"]["job_spec_config"]["backoff_limit"] == 0

    coordinator = instance["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert "max_concurrent_runs" not in coordinator.get("config", {})  # set under concurrency
    assert instance["concurrency"]["runs"] == {
        "max_concurrent_runs": values["concurrency"]["runs"]["maxConcurrentRuns"]}
    assert instance["concurrency"]["runs"]["max_concurrent_runs"] == \
        {"staging": 2, "production": 4}[env]

    host = {"staging": f"{RELEASE}-postgresql",
            "production": values["postgresql"]["postgresqlHost"]}[env]
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert instance[storage]["module"].startswith("dagster_postgres.")
        db = instance[storage]["config"]["postgres_db"]
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # filled from the Secret
        assert (db["hostname"], db["username"], db["db_name"]) == (host, "dagster", "dagster")
        assert db["scheme"] == "postgresql+psycopg2"
    if env == "production":
        assert instance["event_log_storage"]["config"]["postgres_db"]["params"] == \
            {"sslmode": "require"}

    assert instance["compute_logs"]["class"] == "S3ComputeLogManager"
    assert instance["compute_logs"]["config"]["bucket"] == f"trending-now-{env}"
    assert instance["freshness"] == {"enabled": True}
    assert instance["telemetry"] == {"enabled": False}
    assert instance["run_retries"] == {"enabled": True, "max_retries": 1,
                                       "retry_on_asset_or_op_failure": False}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_rendered_instance_runs_one_training_step_per_pool(rendered, env, tmp_path):
    """The rendered concurrency block, read by a real DagsterInstance (its storage swapped
    for SQLite in tmp_path; run launcher and compute logs need a cluster and S3)."""
    dagster_yaml = instance_yaml(rendered[env])
    assert dagster_yaml["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    for needs_outside in ("run_storage", "event_log_storage", "schedule_storage",
                          "run_launcher", "compute_logs"):
        del dagster_yaml[needs_outside]
    home = tmp_path / "home"
    validated_instance_config(dagster_yaml, home)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.pool_config.pool_granularity == PoolGranularity.OP
        assert config.run_queue_config is not None
        assert config.run_queue_config.max_concurrent_runs == \
            chart_values(env)["concurrency"]["runs"]["maxConcurrentRuns"]
        for pool in TRAINING_POOLS:
            assert instance.event_log_storage.get_concurrency_info(pool).limit == 1


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_postgres_password_comes_from_the_secret_only(rendered, env):
    objects = rendered[env]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == []
    password_refs = {}
    for where, container in containers(objects):
        for var in container.get("env", []):
            if var["name"] in {"DAGSTER_PG_PASSWORD", "POSTGRES_PASSWORD"}:
                assert "value" not in var, where
                password_refs[where] = var["valueFrom"]["secretKeyRef"]
    expected = {f"{RELEASE}-dagster-webserver", f"{RELEASE}-daemon",
                f"{RELEASE}-dagster-user-deployments-trending-assets"}
    if env == "staging":
        expected.add(f"{RELEASE}-postgresql")  # the bundled server reads the same Secret
    assert {where.split("/")[1] for where in password_refs} == expected
    assert all(ref == {"name": PG_SECRET, "key": "postgresql-password"}
               for ref in password_refs.values()), password_refs


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_code_location_runs_our_image(rendered, env):
    objects = rendered[env]
    values = chart_values(env)
    [entry] = values["dagster-user-deployments"]["deployments"]
    deployment = find(objects, "Deployment",
                      f"{RELEASE}-dagster-user-deployments-{entry['name']}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{entry['image']['repository']}:{entry['image']['tag']}"
    assert container["image"].startswith("ghcr.io/trending-now/trending-assets:")
    assert container["args"] == ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030",
                                 "-m", "trending_assets.definitions"]
    assert load_settings(env).executor == "k8s"

    env_from = container["envFrom"]
    assert {s["secretRef"]["name"] for s in env_from if "secretRef" in s} >= SECRETS
    config_maps = [find(objects, "ConfigMap", s["configMapRef"]["name"])
                   for s in env_from if "configMapRef" in s]
    app_env = [cm["data"]["APP_ENV"] for cm in config_maps if "APP_ENV" in cm["data"]]
    assert app_env == [env]
    assert not any(var["name"] == "APP_ENV" for var in container["env"])

    # includeConfigInLaunchedRuns: run and step pods get the same Secrets and APP_ENV.
    [context] = [var["value"] for var in container["env"]
                 if var["name"] == "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"]
    k8s = json.loads(context)["k8s"]
    assert set(k8s["env_secrets"]) == SECRETS and k8s["namespace"] == namespace(env)
    assert {cm["metadata"]["name"] for cm in config_maps if "APP_ENV" in cm["data"]} <= \
        set(k8s["env_config_maps"])

    workspace = yaml.safe_load(find(objects, "ConfigMap", f"{RELEASE}-workspace-yaml")
                               ["data"]["workspace.yaml"])
    assert workspace["load_from"] == [{"grpc_server": {
        "host": entry["name"], "port": 3030, "location_name": entry["name"]}}]
    assert find(objects, "Service", entry["name"])["spec"]["ports"][0]["port"] == 3030


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_literal_credentials_in_the_rendered_objects(rendered, env):
    objects = rendered[env]
    assert literal_credentials(objects) == []
    assert literal_credentials(instance_yaml(objects)) == []


# --- no chart needed: the files, the local instances ------------------------------------

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


def test_the_instance_configs_share_the_helm_pools():
    helm_pools = load_values("values.yaml")["concurrency"]
    assert helm_pools["enabled"] is True
    expected = {"default_limit": helm_pools["pools"]["defaultLimit"],
                "granularity": helm_pools["pools"]["granularity"]}
    assert expected == {"default_limit": 1, "granularity": "op"}
    config = yaml.safe_load((REPO / "configs" / "dagster-production.yaml").read_text())
    assert config["concurrency"] == {"pools": expected}
    # Locally no daemon frees the slot of a killed run: the local instance has no pools.
    assert "concurrency" not in yaml.safe_load((REPO / "configs" / "dagster.yaml").read_text())


def test_the_pools_run_one_training_step_per_family(tmp_path):
    """The production concurrency block on an instance (SQLite in tmp_path): each training
    pool has limit 1, and the claim every executor makes before starting a step blocks a
    second run of the family."""
    production = yaml.safe_load((REPO / "configs" / "dagster-production.yaml").read_text())
    validated_instance_config({"concurrency": production["concurrency"]}, tmp_path)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
        for pool in TRAINING_POOLS:
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert (info.limit, info.using_default_limit) == (1, True), pool

        first, second, third = (create_run_for_test(instance, job_name="training")
                                for _ in range(3))
        with InstanceConcurrencyContext(instance, first) as a, \
                InstanceConcurrencyContext(instance, second) as b:
            assert a.claim("train_bert", "bert_model")
            assert not b.claim("train_bert", "bert_model")  # waits: same family
            assert b.claim("train_xgboost", "xgboost_model")  # another family runs
            assert instance.event_log_storage.get_concurrency_info("train_bert").slot_count == 1
            a.free_step("bert_model")
        with InstanceConcurrencyContext(instance, third) as c:
            assert c.claim("train_bert", "bert_model")  # the slot is free again


def test_the_production_instance_config_is_valid(tmp_path, monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    config = validated_instance_config(
        yaml.safe_load((REPO / "configs" / "dagster-production.yaml").read_text()), tmp_path)
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_the_chart_version_is_the_dagster_version():
    assert version("dagster") == CHART_VERSION
    for workflow in ("ci.yml", "cd_staging.yml", "cd_production.yml"):
        text = (REPO / ".github" / "workflows" / workflow).read_text()
        assert f'DAGSTER_CHART_VERSION: "{CHART_VERSION}"' in text, workflow
    for name in ("values.yaml",):
        assert f"version {CHART_VERSION}" in (HELM / name).read_text()
