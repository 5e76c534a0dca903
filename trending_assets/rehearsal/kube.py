"""A Kubernetes API stand-in on 127.0.0.1 that runs every Job it receives as a local process.

No cluster, kind or Docker engine runs on a development or CI machine, so the cluster path
(K8sRunLauncher, k8s_job_executor) is rehearsed against this: a small HTTP server speaking
the part of the Kubernetes REST API that dagster-k8s and the official `kubernetes` client
use (Jobs: create, read, read status, list, delete; Pods: list by label, read, read log,
delete; Events: list; Secrets and ConfigMaps: create, read). A kubeconfig file names it, so
the real client and dagster-k8s run unmodified.

For every Job it receives it validates the manifest against the Kubernetes schema
(kubernetes-validate, strict, 1.30: a manifest a real API server would refuse is refused
with 422), records it, and runs the container's command and args as a process with the
container's environment: `env` (values, Secret and ConfigMap references), `envFrom`, and the
image's own ENV (read from the Dockerfile). The image itself is recorded, never pulled.
ConfigMap volumes are written into a per-pod folder and paths under their mount points are
mapped there (that is how DAGSTER_HOME finds the instance's dagster.yaml, as in a pod).

What it does not do: scheduling (node selectors, taints, resource requests and GPU limits
are recorded and reported, not enforced), image pulls, restarts (backoffLimit is taken as 0,
which is what the project configures), ttlSecondsAfterFinished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
JOBS_PATH = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")
CORE_PATH = re.compile(
    r"^/api/v1/namespaces/([^/]+)/(pods|events|secrets|configmaps)(?:/([^/]+))?(/log)?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ENV of the last stage of a Dockerfile (`ENV K=V [K=V ...]`, continuation lines)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.upper().startswith("FROM "):
            env = {}
        if line.upper().startswith("ENV "):
            for pair in re.findall(r'(\w+)=("[^"]*"|\S+)', line[4:]):
                env[pair[0]] = pair[1].strip('"')
    return env


def _selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (`a=b,c=d`), the only kind dagster-k8s sends."""
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


@dataclass
class Pod:
    """One run of a Job's container: a local process and what the API reports about it."""

    name: str
    namespace: str
    job_name: str
    manifest: dict[str, Any]
    log_path: Path
    process: subprocess.Popen | None = None
    phase: str = "Pending"
    exit_code: int | None = None
    killed: bool = False
    started_at: str = field(default_factory=_now)
    finished_at: str | None = None

    def as_api(self) -> dict[str, Any]:
        container = self.manifest["spec"]["containers"][0]
        state: dict[str, Any]
        if self.exit_code is None:
            state = {"running": {"startedAt": self.started_at}}
        else:
            state = {"terminated": {"exitCode": self.exit_code, "startedAt": self.started_at,
                                    "finishedAt": self.finished_at,
                                    "reason": "Killed" if self.killed else (
                                        "Completed" if self.exit_code == 0 else "Error")}}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {**self.manifest["metadata"], "name": self.name,
                         "namespace": self.namespace, "uid": str(uuid.uuid5(
                             uuid.NAMESPACE_URL, self.name)),
                         "creationTimestamp": self.started_at},
            "spec": {**self.manifest["spec"], "nodeName": "standin"},
            "status": {"phase": self.phase, "startTime": self.started_at,
                       "containerStatuses": [{
                           "name": container["name"], "image": container["image"],
                           "imageID": "", "ready": self.exit_code is None,
                           "restartCount": 0, "state": state}]},
        }


@dataclass
class JobRecord:
    """A Job as received (validated manifest) and the pod that runs it."""

    namespace: str
    manifest: dict[str, Any]
    pod: Pod
    created_at: str = field(default_factory=_now)

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    def as_api(self) -> dict[str, Any]:
        status: dict[str, Any] = {"startTime": self.created_at}
        pod = self.pod
        if pod.exit_code is None:
            status["active"] = 1
        elif pod.exit_code == 0:
            status.update(succeeded=1, completionTime=pod.finished_at, conditions=[
                {"type": "Complete", "status": "True", "lastTransitionTime": pod.finished_at}])
        else:
            status.update(failed=1, conditions=[
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "lastTransitionTime": pod.finished_at}])
        return {**self.manifest, "status": status,
                "metadata": {**self.manifest["metadata"], "namespace": self.namespace,
                             "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                             "creationTimestamp": self.created_at}}

    def summary(self) -> dict[str, Any]:
        """What a person checks: which step, its pod size, GPU limit, node pool, outcome."""
        spec = self.manifest["spec"]["template"]["spec"]
        container = spec["containers"][0]
        labels = self.manifest["spec"]["template"]["metadata"].get("labels", {})
        return {"job": self.name, "step": labels.get("dagster/op"),
                "component": labels.get("app.kubernetes.io/component"),
                "image": container["image"], "resources": container.get("resources", {}),
                "node_selector": spec.get("nodeSelector", {}),
                "tolerations": spec.get("tolerations", []),
                "exit_code": self.pod.exit_code, "killed": self.pod.killed}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


class KubeStandIn:
    """The API server and the "node" in one object; start() serves on a loopback port.

    `node_env` is the environment every container starts from (as a node's runtime gives
    PATH and HOME); `host_paths` maps image paths (the WORKDIR, say) to folders here."""

    def __init__(self, workdir: Path, node_env: dict[str, str], image_env: dict[str, str],
                 host_paths: dict[str, Path], validate: bool = True) -> None:
        self.workdir = workdir
        self.node_env, self.image_env, self.host_paths = node_env, image_env, host_paths
        self.validate = validate
        self.jobs: dict[tuple[str, str], JobRecord] = {}
        self.refused: list[dict[str, Any]] = []
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> KubeStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                try:
                    code, payload = stand_in.handle(method, url.path, query, body)
                except ApiError as exc:
                    code, payload = exc.code, exc.status()
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path, namespace: str) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin"}}],
            "contexts": [{"name": "standin", "context": {
                "cluster": "standin", "user": "standin", "namespace": namespace}}],
        }))
        return path

    def stop(self) -> None:
        with self._lock:
            for record in self.jobs.values():
                self._kill(record.pod)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- objects a cluster holds before the chart is installed (kubectl create ...) -------
    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = dict(data)

    def add_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.config_maps[(namespace, name)] = dict(data)

    # -- what tests and the rehearsal ask -------------------------------------------------
    def job_summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.summary() for r in self.jobs.values()]

    def running_pods(self, step: str | None = None) -> list[Pod]:
        with self._lock:
            return [r.pod for r in self.jobs.values() if r.pod.exit_code is None
                    and (step is None or r.summary()["step"] == step)]

    def kill_pod(self, pod: Pod) -> None:
        """SIGKILL the pod's processes, as a preempted node does; the Job then fails."""
        with self._lock:
            pod.killed = True
            self._kill(pod)

    def pod_log(self, job_name: str) -> str:
        with self._lock:
            record = next(r for r in self.jobs.values() if r.name == job_name)
        return record.pod.log_path.read_text(errors="replace")

    # -- the REST API ---------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str],
               body: Any) -> tuple[int, Any]:
        if match := JOBS_PATH.match(path):
            namespace, name, _status = match.groups()
            return self._jobs(method, namespace, name, query, body)
        if match := CORE_PATH.match(path):
            namespace, kind, name, log = match.groups()
            if kind == "pods":
                return self._pods(method, namespace, name, bool(log), query)
            if kind == "events":
                return 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {},
                             "items": []}
            return self._stored(method, namespace, kind, name, body)
        raise ApiError(404, "NotFound", f"the stand-in does not serve {method} {path}")

    def _jobs(self, method: str, namespace: str, name: str | None, query: dict[str, str],
              body: Any) -> tuple[int, Any]:
        if method == "POST" and name is None:
            return 201, self._create_job(namespace, body).as_api()
        with self._lock:
            if name is None and method == "GET":
                items = [r.as_api() for (ns, _), r in self.jobs.items() if ns == namespace
                         and _selector_matches(query.get("labelSelector"),
                                               r.manifest["metadata"].get("labels", {}))]
                return 200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {},
                             "items": items}
            record = self.jobs.get((namespace, name or ""))
            if record is None:
                raise ApiError(404, "NotFound", f'jobs.batch "{name}" not found')
            if method == "GET":
                return 200, record.as_api()
            if method == "DELETE":
                self._kill(record.pod)
                del self.jobs[(namespace, record.name)]
                return 200, {"apiVersion": "v1", "kind": "Status", "status": "Success",
                             "metadata": {}}
        raise ApiError(405, "MethodNotAllowed", f"{method} on jobs")

    def _pods(self, method: str, namespace: str, name: str | None, log: bool,
              query: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            pods = {r.pod.name: r.pod for (ns, _), r in self.jobs.items() if ns == namespace}
            if name is None:
                items = [p.as_api() for p in pods.values()
                         if _selector_matches(query.get("labelSelector"),
                                              p.manifest["metadata"].get("labels", {}))]
                return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                             "items": items}
            pod = pods.get(name)
            if pod is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found')
            if log:
                text = pod.log_path.read_text(errors="replace") if pod.log_path.exists() else ""
                tail = query.get("tailLines")
                return 200, "\n".join(text.splitlines()[-int(tail):]) if tail else text
            if method == "DELETE":
                self._kill(pod)
            return 200, pod.as_api()

    def _stored(self, method: str, namespace: str, kind: str, name: str | None,
                body: Any) -> tuple[int, Any]:
        store = self.secrets if kind == "secrets" else self.config_maps
        api_kind = "Secret" if kind == "secrets" else "ConfigMap"
        if method == "POST" and name is None:
            store[(namespace, body["metadata"]["name"])] = dict(body.get("data") or {})
            return 201, body
        data = store.get((namespace, name or ""))
        if method == "GET" and data is not None:
            return 200, {"apiVersion": "v1", "kind": api_kind,
                         "metadata": {"name": name, "namespace": namespace}, "data": data}
        raise ApiError(404, "NotFound", f'{kind} "{name}" not found')

    # -- running a Job --------------------------------------------------------------------
    def _create_job(self, namespace: str, body: dict[str, Any]) -> JobRecord:
        manifest = {"apiVersion": "batch/v1", "kind": "Job", **body}
        if self.validate:
            try:
                kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(map(str, exc.path))
                self.refused.append({"manifest": manifest, "error": f"{where}: {exc.message}"})
                raise ApiError(422, "Invalid", f"Job is invalid: {where}: {exc.message}") \
                    from exc
        name = manifest["metadata"]["name"]
        with self._lock:
            if (namespace, name) in self.jobs:
                raise ApiError(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            template = manifest["spec"]["template"]
            pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
            labels = {**template.get("metadata", {}).get("labels", {}), "job-name": name,
                      "batch.kubernetes.io/job-name": name}
            pod_dir = self.workdir / "pods" / pod_name
            pod_dir.mkdir(parents=True)
            pod = Pod(pod_name, namespace, name,
                      {"metadata": {**template.get("metadata", {}), "labels": labels},
                       "spec": template["spec"]}, pod_dir / "log.txt")
            record = JobRecord(namespace, manifest, pod)
            self.jobs[(namespace, name)] = record
            self._start(record, pod_dir)
        return record

    def _env_source(self, namespace: str, kind: str, name: str, key: str | None,
                    optional: bool) -> dict[str, str]:
        store = self.secrets if kind == "secret" else self.config_maps
        data = store.get((namespace, name))
        if data is None:
            if optional:
                return {}
            # A kubelet keeps such a pod in CreateContainerConfigError; here it fails at once.
            raise ApiError(422, "CreateContainerConfigError", f'{kind} "{name}" not found')
        return {key: data[key]} if key is not None else data

    def _container_env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env = dict(self.image_env)
        for source in container.get("envFrom", []):
            ref = source.get("secretRef") or source.get("configMapRef")
            kind = "secret" if "secretRef" in source else "configmap"
            env.update(self._env_source(namespace, kind, ref["name"], None,
                                        bool(ref.get("optional"))))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "valueFrom" in var:
                ref = var["valueFrom"].get("secretKeyRef") or var["valueFrom"].get(
                    "configMapKeyRef")
                if ref is None:  # fieldRef / resourceFieldRef: nothing the steps read
                    continue
                kind = "secret" if "secretKeyRef" in var["valueFrom"] else "configmap"
                found = self._env_source(namespace, kind, ref["name"], ref["key"],
                                         bool(ref.get("optional")))
                if ref["key"] in found:
                    env[var["name"]] = found[ref["key"]]
        return env

    def _mount_paths(self, namespace: str, spec: dict[str, Any], container: dict[str, Any],
                     root: Path) -> dict[str, Path]:
        """ConfigMap volumes written under the pod's folder: image path -> folder here."""
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mapped: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "configMap" not in volume:
                continue  # emptyDir (/dev/shm) and others: the host's own
            data = self._env_source(namespace, "configmap", volume["configMap"]["name"],
                                    None, bool(volume["configMap"].get("optional")))
            target = root / mount["mountPath"].lstrip("/")
            if mount.get("subPath"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[mount["subPath"]])
                mapped[str(Path(mount["mountPath"]).parent)] = target.parent
            else:
                target.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (target / key).write_text(value)
                mapped[mount["mountPath"]] = target
        return mapped

    def _start(self, record: JobRecord, pod_dir: Path) -> None:
        pod = record.pod
        spec = pod.manifest["spec"]
        container = spec["containers"][0]
        try:
            env = self._container_env(record.namespace, container)
            paths = {**{k: Path(v) for k, v in self.host_paths.items()},
                     **self._mount_paths(record.namespace, spec, container, pod_dir / "root")}
        except ApiError as exc:
            pod.log_path.write_text(exc.message + "\n")
            self._finish(pod, 1)
            return

        def host(value: str) -> str:
            for image_path, folder in sorted(paths.items(), key=lambda p: -len(p[0])):
                if value == image_path or value.startswith(image_path.rstrip("/") + "/"):
                    return str(folder) + value[len(image_path.rstrip("/")):]
            return value

        env = {k: host(v) for k, v in env.items()}
        env = {**self.node_env, **env, "HOSTNAME": pod.name,
               "PATH": self.node_env.get("PATH", os.defpath)}
        argv = [*container.get("command", []), *container.get("args", [])]
        cwd = host(container.get("workingDir") or self.image_env.get("WORKDIR", "/"))
        log = pod.log_path.open("wb")
        try:
            pod.process = subprocess.Popen(argv, env=env, cwd=cwd if Path(cwd).is_dir()
                                           else str(pod_dir), stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            log.write(f"cannot start {argv[:1]}: {exc}\n".encode())
            log.close()
            self._finish(pod, 127)
            return
        pod.phase = "Running"
        threading.Thread(target=self._wait, args=(pod, log), daemon=True).start()

    def _wait(self, pod: Pod, log: Any) -> None:
        assert pod.process is not None
        code = pod.process.wait()
        log.close()
        with self._lock:  # a signal -N is reported as a container runtime does: 128 + N
            self._finish(pod, 128 - code if code < 0 else code)

    @staticmethod
    def _finish(pod: Pod, code: int) -> None:
        pod.exit_code, pod.finished_at = code, _now()
        pod.phase = "Succeeded" if code == 0 else "Failed"

    @staticmethod
    def _kill(pod: Pod) -> None:
        if pod.process is not None and pod.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)  # the pod's whole process group
