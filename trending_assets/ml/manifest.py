"""Reproducibility manifest per registered version: everything needed to train it again.

Code (git commit and whether the tree was dirty), every installed distribution with its
version, the Python version, seeds, the data's content hash and where the exact split
table is stored, the whole validated configuration, the base model's content hash (BERT),
and the hardware it ran on.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

MANIFEST_SCHEMA = "trending-now/reproducibility-manifest/v1"
DIRTY_SUFFIX = "-dirty"


def installed_distributions() -> dict[str, str]:
    """Every installed distribution -> version (the full dependency list), sorted by name."""
    found: dict[str, str] = {}
    for dist in importlib_metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name.lower(), dist.version)
    return dict(sorted(found.items()))


def hardware() -> dict[str, Any]:
    """Where the training ran: results can depend on the CPU count and on the GPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        info["memory_gb"] = None
    torch = sys.modules.get("torch")  # only when this process trained with it
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["gpus"] = []
    return info


def folder_digest(folder: str | Path) -> str:
    """sha256 over a folder's files (relative names and contents), e.g. BERT base weights."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def split_git_commit(commit: str) -> tuple[str, bool]:
    """'<sha>-dirty' (as lineage records it) -> ('<sha>', True)."""
    return commit.removesuffix(DIRTY_SUFFIX), commit.endswith(DIRTY_SUFFIX)


def build_manifest(
    *, model: str, version: int, family: str, git_commit: str, config: Mapping[str, Any],
    seeds: Mapping[str, Any], data: Mapping[str, Any], base_model: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The manifest as a JSON-able dict. `data`: content_hash, splits_key, splits_version
    (where the exact split table is stored) and rows per split."""
    commit, dirty = split_git_commit(git_commit)
    return {
        "schema": MANIFEST_SCHEMA,
        "model": model,
        "version": version,
        "family": family,
        "git": {"commit": commit, "dirty": dirty},
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation()},
        "dependencies": installed_distributions(),
        "seeds": dict(seeds),
        "data": dict(data),
        "base_model": None if base_model is None else dict(base_model),
        "config": dict(config),
        "hardware": hardware(),
    }


def environment_differences(manifest: Mapping[str, Any]) -> list[str]:
    """What differs between the recorded environment and this one (for a reproduction)."""
    notes = []
    if manifest["python"]["version"] != platform.python_version():
        notes.append(f"python {manifest['python']['version']} recorded, "
                     f"{platform.python_version()} here")
    here = installed_distributions()
    for name, version in manifest["dependencies"].items():
        if here.get(name) != version:
            notes.append(f"{name} {version} recorded, {here.get(name, 'not installed')} here")
    recorded_cpus = manifest["hardware"].get("usable_cpus")
    if recorded_cpus != hardware()["usable_cpus"]:
        notes.append(f"{recorded_cpus} usable CPUs recorded, {hardware()['usable_cpus']} here")
    return notes
