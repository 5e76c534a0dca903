"""Kubernetes: one pod per step (k8s_job_executor; trending_assets/k8s.py builds it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trending_assets.settings.base import _Strict

_CPU_QUANTITY = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"
_MEMORY_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
_QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
                      "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def quantity_value(quantity: str) -> float:
    """A Kubernetes quantity ('500m', '2', '16Gi') as a plain number, to compare sizes."""
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(quantity)


class PodSize(_Strict):
    cpu: str = Field(pattern=_CPU_QUANTITY, description="cores: '2', '0.5' or '500m'")
    memory: str = Field(pattern=_MEMORY_QUANTITY, description="bytes: '512Mi', '16Gi'")


class Toleration(_Strict):
    key: str = Field(min_length=1)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _value_matches_operator(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"toleration {self.key!r}: operator Exists takes no value")
        if self.operator == "Equal" and self.value is None:
            raise ValueError(f"toleration {self.key!r}: operator Equal needs a value "
                             "(or use operator: Exists)")
        return self


class NodePool(_Strict):
    """Where a step may run: the pool's node labels and the taints its pods tolerate."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class StepPod(_Strict):
    requests: PodSize
    limits: PodSize
    gpus: int = Field(0, ge=0, description="GPUs for the container (k8s.gpu_resource limit)")
    pool: str | None = Field(None, description="a key of k8s.node_pools; empty = any node")
    shm_size: str | None = Field(
        None, pattern=_MEMORY_QUANTITY,
        description="/dev/shm in memory: torch workers and NCCL need more than the 64Mi default")
    deadline_seconds: int | None = Field(
        None, ge=60, description="the Job is stopped after this long (activeDeadlineSeconds)")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> StepPod:
        for resource in ("cpu", "memory"):
            request = getattr(self.requests, resource)
            limit = getattr(self.limits, resource)
            if quantity_value(request) > quantity_value(limit):
                raise ValueError(f"requests.{resource} ({request}) is above limits.{resource} "
                                 f"({limit}); Kubernetes rejects such a pod")
        return self


class K8sSettings(_Strict):
    """Pods of the k8s_job_executor: one Kubernetes Job per step (op), sized per step."""

    image: str | None = Field(
        None, description="the image every step Job runs; null = $DAGSTER_CURRENT_IMAGE, which "
                          "the Helm chart sets in the code location's pod")
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource name of a GPU")
    job_ttl_seconds: int = Field(
        86400, ge=0, description="finished Jobs (and their pod logs) are deleted after this")
    backoff_limit: int = Field(
        0, ge=0, description="pod restarts by Kubernetes; Dagster's retry policy retries steps")
    max_concurrent_steps: int | None = Field(None, ge=1, description="pods at once in one run")
    node_pools: dict[str, NodePool] = Field(default_factory=dict)
    default_step: StepPod = StepPod(requests=PodSize(cpu="250m", memory="512Mi"),
                                    limits=PodSize(cpu="1", memory="2Gi"))
    steps: dict[str, StepPod] = Field(
        default_factory=dict, description="op name -> pod size; other steps get default_step")

    @model_validator(mode="after")
    def _pools_exist(self) -> K8sSettings:
        named = {"default_step": self.default_step} | {f"steps.{k}": v
                                                       for k, v in self.steps.items()}
        for where, step in named.items():
            if step.pool is not None and step.pool not in self.node_pools:
                raise ValueError(f"{where}.pool {step.pool!r} is not in node_pools "
                                 f"({', '.join(self.node_pools) or 'none defined'})")
            if step.gpus and step.pool is None:
                raise ValueError(f"{where} asks for {step.gpus} GPU(s) but names no pool: "
                                 "GPU nodes are tainted, set `pool` to one that tolerates them")
        return self

