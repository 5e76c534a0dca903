"""The k8s_job_executor's configuration, built from the `k8s:` settings in one place.

Each step (op) runs as its own Kubernetes Job. The executor's `step_k8s_config` sizes every
step; its `per_step_k8s_config` (keyed by op name) overrides that for the heavy steps: CPU
and memory requests/limits, GPUs, the node pool (node selector + tolerations), /dev/shm and
a deadline. A GPU step also carries the same config as its `dagster-k8s/config` op tag
(`step_op_tags`), the standard place for it, so any k8s launcher or executor sees the GPU
request and the UI shows it on the asset. The image comes from `k8s.image` (the code
location's $DAGSTER_CURRENT_IMAGE by default), so every launch path carries it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trending_assets.settings import ConfigError, K8sSettings, StepPod

SHM_VOLUME = "dshm"
K8S_CONFIG_TAG = "dagster-k8s/config"


def step_k8s_config(step: StepPod, k8s: K8sSettings) -> dict[str, Any]:
    """One step's pod as dagster-k8s user-defined config (snake_case Kubernetes fields)."""
    limits: dict[str, str] = step.limits.model_dump()
    if step.gpus:
        # An extended resource is set as a limit; Kubernetes makes the request equal to it.
        limits[k8s.gpu_resource] = str(step.gpus)
    container: dict[str, Any] = {"resources": {"requests": step.requests.model_dump(),
                                               "limits": limits}}
    pod_spec: dict[str, Any] = {}
    if step.pool is not None:
        pool = k8s.node_pools[step.pool]
        pod_spec["node_selector"] = dict(pool.node_selector)
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in pool.tolerations]
    if step.shm_size is not None:
        pod_spec["volumes"] = [{"name": SHM_VOLUME,
                                "empty_dir": {"medium": "Memory", "size_limit": step.shm_size}}]
        container["volume_mounts"] = [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]
    job_spec: dict[str, Any] = {"ttl_seconds_after_finished": k8s.job_ttl_seconds,
                                "backoff_limit": k8s.backoff_limit}
    if step.deadline_seconds is not None:
        job_spec["active_deadline_seconds"] = step.deadline_seconds
    return {"container_config": container, "pod_spec_config": pod_spec,
            "job_spec_config": job_spec}


def step_pod(k8s: K8sSettings, op_name: str) -> StepPod:
    """The configured pod of one step: its own entry, else the default."""
    return k8s.steps.get(op_name, k8s.default_step)


def step_op_tags(k8s: K8sSettings, op_name: str) -> dict[str, Any] | None:
    """`dagster-k8s/config` op tags for a step that asks for GPUs (None for the others)."""
    pod = step_pod(k8s, op_name)
    return {K8S_CONFIG_TAG: step_k8s_config(pod, k8s)} if pod.gpus else None


def executor_config(k8s: K8sSettings, op_names: Iterable[str]) -> dict[str, Any]:
    """Config for `k8s_job_executor.configured(...)`; `op_names` are the graph's steps."""
    known = set(op_names)
    unknown = sorted(set(k8s.steps) - known)
    if unknown:
        raise ConfigError(
            f"k8s.steps: {', '.join(unknown)} is not a step of the asset graph (a typo would "
            f"silently leave the step at default_step); steps are: {', '.join(sorted(known))}")
    config: dict[str, Any] = {
        "step_k8s_config": step_k8s_config(k8s.default_step, k8s),
        "per_step_k8s_config": {name: step_k8s_config(step, k8s)
                                for name, step in sorted(k8s.steps.items())},
    }
    if k8s.image is not None:
        config["job_image"] = k8s.image
    if k8s.max_concurrent_steps is not None:
        config["max_concurrent"] = k8s.max_concurrent_steps
    return config
