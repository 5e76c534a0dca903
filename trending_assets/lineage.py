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
from dagster import AssetExecutionContext, MetadataValue

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
    meta: dict[str, Any] = {k: v for k, v in lineage_fields.items() if k != "libraries"}
    meta["libraries"] = MetadataValue.json(lineage_fields["libraries"])
    meta.update(figures)
    return meta
