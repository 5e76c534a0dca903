"""`python -m trending_assets.rehearsal.stack` (`make rehearse`): staging on this machine.

What a staging cluster provides is started on loopback: the Kubernetes API (the stand-in in
`kube`, which runs every Job as a local process), PostgreSQL for the Dagster instance that
every pod shares, and S3 (moto's server) for the landing prefix, the artifact root and the
registry. `APP_ENV=staging` is loaded with a small overlay (below: the S3 endpoint, a tiny
BERT, W&B offline, gates off for a small sample); the instance is configured with the
K8sRunLauncher as the Helm chart configures it. Then the staging smoke test (`smoke`, the
command CD runs in the cluster) runs in a pod of the stand-in, as in the code location's
pod, and every step it starts runs as its own Job.

What this proves: the Jobs dagster-k8s builds for every step pass the Kubernetes schema and
run to completion with only what their manifests carry (image env, env, Secrets,
ConfigMaps, the instance config mounted at DAGSTER_HOME); the staging configuration, the
Postgres instance and the S3 store work across processes. What it does not: scheduling
(node selectors, taints and GPU limits are recorded, not enforced), image pulls, a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import kubernetes
import yaml

from trending_assets.ml import families
from trending_assets.rehearsal.kube import KubeStandIn, image_env
from trending_assets.rehearsal.services import PostgresServer, free_port
from trending_assets.settings import REPO_ROOT, deep_merge

NAMESPACE = "trending-now-staging"
BUCKET = "trending-now-staging"
IMAGE = "trending-assets:rehearsal"
INSTANCE_CONFIG_MAP = "dagster-instance"
PIPELINE_ENV_CONFIG_MAP = "dagster-pipeline-env"
POSTGRES_SECRET = "dagster-postgresql-secret"
APP_SECRETS = ("trending-now-aws", "trending-now-wandb", "trending-now-alerts")
DAGSTER_HOME_IN_IMAGE = "/opt/dagster/dagster_home"


def staging_overlay(workdir: Path, s3_endpoint: str, tiny_bert: Path) -> dict[str, Any]:
    """What the rehearsal changes in staging: where S3 is, a model and data small enough for
    a CI machine, and nothing that needs an account (W&B offline, alerts to the log)."""
    return {
        "storage": {"s3_endpoint_url": s3_endpoint, "cache": str(workdir / "cache")},
        "tracking": {"mode": "offline", "dir": str(workdir / "wandb")},
        "registry": {"backend": "store"},
        "alerts": {"channels": [{"kind": "log"}]},
        "data": {"min_rows": 100, "ood_max_rows": 200},
        "xgboost": {"n_estimators": 20, "k_best_features": 300},
        "bert": {"model_path": str(tiny_bert), "epochs": 2, "batch_size": 16,
                 "checkpoint_every_steps": 5, "log_every_steps": 5},
        "gates": {f: {"min_macro_f1": 0.0, "min_micro_f1": 0.0, "genre_floor": None,
                      "slices": []} for f in families.names()},
    }


def write_tiny_bert(folder: Path) -> Path:
    """A randomly initialised 2-layer BERT with the bundled MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from trending_assets.ml.bert.model import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def instance_yaml(kubeconfig: Path) -> str:
    """The instance's dagster.yaml as the chart writes it from helm/values*.yaml: Postgres
    storage (configs/dagster-production.yaml) and the K8sRunLauncher, here reaching the
    stand-in through a kubeconfig instead of the in-cluster service account."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "dagster-production.yaml").read_text())
    config["run_launcher"] = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
        "instance_config_map": INSTANCE_CONFIG_MAP,
        "dagster_home": DAGSTER_HOME_IN_IMAGE,
        "postgres_password_secret": POSTGRES_SECRET,
        "job_namespace": NAMESPACE,
        "image_pull_policy": "IfNotPresent",
        "service_account_name": "dagster",
        "env_config_maps": [PIPELINE_ENV_CONFIG_MAP],
        "env_secrets": list(APP_SECRETS),
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "fail_pod_on_run_failure": True,
    }}
    return yaml.safe_dump(config)


@dataclass
class LocalCluster:
    """The running stack: the stand-in, the servers, and the settings every pod gets."""

    workdir: Path
    kube: KubeStandIn
    postgres: PostgresServer
    s3_endpoint: str
    config_dir: Path
    pipeline_env: dict[str, str]
    secrets: dict[str, dict[str, str]]

    @property
    def process_env(self) -> dict[str, str]:
        """What a process outside the pods (a test reading the instance) needs."""
        return {**self.pipeline_env, **self.secrets["trending-now-aws"],
                "DAGSTER_PG_PASSWORD": self.postgres.password,
                "DAGSTER_HOME": str(self.workdir / "dagster_home")}

    def s3(self) -> Any:
        aws = self.secrets["trending-now-aws"]
        return boto3.client("s3", endpoint_url=self.s3_endpoint,
                            region_name=aws["AWS_DEFAULT_REGION"],
                            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])


@contextmanager
def local_cluster(workdir: Path, extra_overlay: dict[str, Any] | None = None,
                  ) -> Iterator[LocalCluster]:
    """Start PostgreSQL, moto's S3 server and the Kubernetes stand-in; stop them after.
    `extra_overlay` changes staging further (a test's longer BERT training, say)."""
    from moto.server import ThreadedMotoServer

    postgres = PostgresServer.create()
    s3_port = free_port()
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    node_env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', os.defpath)}",
                "HOME": str(workdir), "LANG": "C.UTF-8"}
    kube = KubeStandIn(workdir / "kube", node_env, image_env(REPO_ROOT / "Dockerfile"),
                       host_paths={"/opt/app": REPO_ROOT})
    try:
        postgres.init()
        postgres.start()
        postgres.create_database()
        s3_server.start()
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        kube.start()
        config_dir = workdir / "configs"
        shutil.copytree(REPO_ROOT / "configs", config_dir)
        staging = yaml.safe_load((config_dir / "staging.yaml").read_text())
        overlay = deep_merge(staging_overlay(workdir, s3_endpoint,
                                             write_tiny_bert(workdir / "tiny_bert")),
                             extra_overlay or {})
        (config_dir / "staging.yaml").write_text(yaml.safe_dump(deep_merge(staging, overlay)))
        secrets = {
            "trending-now-aws": {"AWS_ACCESS_KEY_ID": "rehearsal",
                                 "AWS_SECRET_ACCESS_KEY": "rehearsal",
                                 "AWS_DEFAULT_REGION": "us-east-1"},
            "trending-now-wandb": {"WANDB_MODE": "offline"},
            "trending-now-alerts": {},
            POSTGRES_SECRET: {"postgresql-password": postgres.password},
        }
        # What the chart and the code location's env give every pod: the environment, and
        # the Postgres connection (the password comes from its Secret).
        pipeline_env = {"APP_ENV": "staging", "TRENDING_CONFIG_DIR": str(config_dir),
                        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port),
                        "DAGSTER_PG_USERNAME": postgres.username,
                        "DAGSTER_PG_DB": postgres.database}
        for name, data in secrets.items():
            kube.add_secret(NAMESPACE, name, data)
        kube.add_config_map(NAMESPACE, PIPELINE_ENV_CONFIG_MAP, pipeline_env)
        kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig", NAMESPACE)
        kube.add_config_map(NAMESPACE, INSTANCE_CONFIG_MAP,
                            {"dagster.yaml": instance_yaml(kubeconfig)})
        home = workdir / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(kubeconfig))
        cluster = LocalCluster(workdir, kube, postgres, s3_endpoint, config_dir, pipeline_env,
                               secrets)
        cluster.s3().create_bucket(Bucket=BUCKET)
        yield cluster
    finally:
        kube.stop()
        s3_server.stop()
        postgres.destroy()


def code_location_pod(name: str, command: list[str]) -> dict[str, Any]:
    """A Job running `command` the way the code location's pod runs it: our image, the
    chart's env (DAGSTER_CURRENT_IMAGE, the Secrets by reference, the instance ConfigMap
    at DAGSTER_HOME)."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "smoke"}},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "smoke"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "smoke", "image": IMAGE, "command": command,
                    "env": [{"name": "DAGSTER_CURRENT_IMAGE", "value": IMAGE},
                            {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": {
                                "name": POSTGRES_SECRET, "key": "postgresql-password"}}}],
                    "envFrom": [{"configMapRef": {"name": PIPELINE_ENV_CONFIG_MAP}},
                                *({"secretRef": {"name": s}} for s in APP_SECRETS)],
                    "volumeMounts": [{"name": "instance", "mountPath":
                                      f"{DAGSTER_HOME_IN_IMAGE}/dagster.yaml",
                                      "subPath": "dagster.yaml"}],
                }],
                "volumes": [{"name": "instance",
                             "configMap": {"name": INSTANCE_CONFIG_MAP}}],
            }}},
    }


def smoke_command(titles: int) -> list[str]:
    """The staging smoke test, as CD runs it in the code location's pod (cd_staging.yml)."""
    return ["python", "-m", "trending_assets.rehearsal.smoke", "--titles", str(titles)]


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str,
             every_s: float = 1.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not done within {deadline_s:.0f} s")
        time.sleep(every_s)


@dataclass
class RehearsalResult:
    exit_code: int
    jobs: list[dict[str, Any]]
    smoke_log: str

    def table(self) -> str:
        rows = [("job", "step", "requests", "limits", "GPU", "node selector", "exit")]
        for job in self.jobs:
            resources = job["resources"]
            limits = dict(resources.get("limits", {}))
            gpu = limits.pop("nvidia.com/gpu", "-")
            rows.append((job["job"][:40], job["step"] or job["component"] or "-",
                         ",".join(f"{k}={v}" for k, v in resources.get("requests", {}).items())
                         or "-", ",".join(f"{k}={v}" for k, v in limits.items()) or "-", gpu,
                         ",".join(f"{k}={v}" for k, v in job["node_selector"].items()) or "-",
                         f"{job['exit_code']}{' (killed)' if job['killed'] else ''}"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
                         for r in rows)


def run_smoke(cluster: LocalCluster, titles: int, deadline_s: float,
              while_running: Callable[[LocalCluster], None] | None = None) -> RehearsalResult:
    """The CD smoke command in a code-location pod of the stand-in; wait for it to end."""
    kubernetes.config.load_kube_config(str(cluster.workdir / "kubeconfig"))
    batch = kubernetes.client.BatchV1Api()
    batch.create_namespaced_job(NAMESPACE, code_location_pod("smoke", smoke_command(titles)))

    def finished() -> bool:
        if while_running is not None:
            while_running(cluster)
        status = batch.read_namespaced_job_status("smoke", NAMESPACE).status
        return bool(status.succeeded or status.failed)

    wait_for(finished, deadline_s, "the smoke Job", every_s=0.5 if while_running else 2.0)
    status = batch.read_namespaced_job_status("smoke", NAMESPACE).status
    return RehearsalResult(0 if status.succeeded else 1, cluster.kube.job_summaries(),
                           cluster.kube.pod_log("smoke"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trending_assets.rehearsal.stack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", type=int, default=600)
    parser.add_argument("--deadline", type=float, default=1800, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="trending-rehearsal-"))
    try:
        with local_cluster(workdir) as cluster:
            result = run_smoke(cluster, args.titles, args.deadline)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(result.smoke_log[-3000:])
    print(result.table())
    print(json.dumps({"exit_code": result.exit_code, "jobs": len(result.jobs)}))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
