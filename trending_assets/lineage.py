"""What produced a materialization: run, trigger, code, config, data, libraries, cost."""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import metadata as importlib_metadata
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MetadataValue

from resources.io_manager import pinned_version
from resources.storage import ArtifactNotFoundError
from trending_assets.settings import REPO_ROOT, Settings

TRACKED_LIBRARIES = (
    "dagster", "great-expectations", "wandb", "xgboost-cpu", "xgboost", "scikit-learn",
    "torch", "transformers", "pandas", "numpy",
)


@cache
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@cache
def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def trigger_of(context: AssetExecutionContext) -> str:
    """How the run started: sensor:<name>, schedule:<name>, automation, backfill or manual."""
    tags = context.run.tags
    if "dagster/sensor_name" in tags:
        return f"sensor:{tags['dagster/sensor_name']}"
    if "dagster/schedule_name" in tags:
        return f"schedule:{tags['dagster/schedule_name']}"
    if "dagster/backfill" in tags:
        return f"backfill:{tags['dagster/backfill']}"
    if tags.get("trending/trigger"):
        return tags["trending/trigger"]
    return "manual"


def table_version(table: pd.DataFrame) -> str:
    """Content hash of a table: the data version recorded in lineage."""
    hashed = pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes()
    return hashlib.sha256(hashed + ",".join(table.columns).encode()).hexdigest()[:16]


def peak_memory_mb() -> float:
    # ru_maxrss is in KiB on Linux; each step runs in its own process with the
    # multiprocess and Kubernetes executors, so this is the step's peak.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _loaded_partitions(context: AssetExecutionContext, input_name: str,
                       key: AssetKey) -> list[str | None]:
    # asking an unpartitioned input for its partitions fails instead of answering "none"
    if context.job_def.asset_layer.get(key).partitions_def is None:
        return [None]
    return list(context.asset_partition_keys_for_input(input_name))


def input_versions(context: AssetExecutionContext) -> dict[str, dict[str, Any]]:
    """The exact stored version of every input this step reads: the run that wrote it and
    the content hash of its files, per input asset (and partition). Each upstream
    materialization records its own inputs the same way, so a registry version's lineage
    leads hash by hash back to the landing files' content_sha256."""
    versions: dict[str, dict[str, Any]] = {}
    for input_name, key in sorted(context.assets_def.keys_by_input_name.items()):
        for partition in _loaded_partitions(context, input_name, key):
            try:
                pin = pinned_version(context.instance, context.run.run_id, key, partition)
            except ArtifactNotFoundError:  # newer than this run: not an input of it
                continue
            if pin is None:
                continue
            label = key.to_user_string() + ("" if partition is None else f"[{partition}]")
            versions[label] = {"version": pin.version, "artifact_sha256": pin.artifact_sha256,
                               "this_run": pin.written_by_this_run}
    return versions


def lineage(
    context: AssetExecutionContext, settings: Settings, data_version: str,
) -> dict[str, Any]:
    """The lineage fields every materialization records (also sent to W&B as config)."""
    return {
        "dagster_run_id": context.run.run_id,
        "trigger": trigger_of(context),
        "git_commit": settings.code_version or git_commit(),
        "config_hash": settings.fingerprint(),
        "environment": settings.environment,
        "data_version": data_version,
        "input_versions": input_versions(context),
        "libraries": library_versions(),
    }


@contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Wall time and peak memory of the block, filled in when it ends."""
    figures: dict[str, float] = {}
    start = time.perf_counter()
    yield figures
    figures["wall_seconds"] = round(time.perf_counter() - start, 2)
    figures["peak_memory_mb"] = round(peak_memory_mb(), 1)


def as_metadata(lineage_fields: dict[str, Any], figures: dict[str, float]) -> dict[str, Any]:
    """Lineage + cost figures as Dagster metadata values."""
    structured = ("libraries", "input_versions")
    meta: dict[str, Any] = {k: v for k, v in lineage_fields.items() if k not in structured}
    for key in structured:
        if key in lineage_fields:
            meta[key] = MetadataValue.json(lineage_fields[key])
    meta.update(figures)
    return meta
