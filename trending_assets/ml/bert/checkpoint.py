"""Training checkpoints that survive a killed process: atomic, verified, resumable.

A checkpoint is a few named blobs plus a JSON state, stored through any `CheckpointStorage`
(bytes in/out by name: a local folder here, the artifact store's adapter in the pipeline).
Two slots alternate, so storage stays bounded and the previous checkpoint stays intact
while the next one is written. Writing a slot first replaces its manifest with an
"incomplete" marker, then writes the blobs, then the manifest with every blob's sha256
last: a process killed at any point leaves either the old complete checkpoint or a slot
that `latest()` skips. Blobs are safetensors, JSON or `torch.save` of plain tensors and
numbers, read back with `weights_only=True` (no arbitrary unpickling).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trending_assets.ml.artifact import write_temp_beside

MANIFEST = "manifest.json"
SLOTS = ("slot-0", "slot-1")
FORMAT = 1


class CheckpointStorage(Protocol):
    """Bytes in and out by '/'-separated name."""

    def write(self, name: str, data: bytes) -> None:
        """Store `data` under `name`, replacing what was there; atomic per name."""

    def read(self, name: str) -> bytes:
        """The bytes stored under `name`; FileNotFoundError when there are none."""


class DirectoryCheckpointStorage:
    """A local folder; each write is a temp file renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        os.replace(write_temp_beside(path, data), path)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


@dataclass(frozen=True)
class StoredCheckpoint:
    """A complete checkpoint read back: its blobs and state."""

    slot: str
    blobs: dict[str, bytes]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Checkpointer:
    """Writes and finds checkpoints of one training run.

    `fingerprint` names what must not change between a run and its resumption (model,
    data, hyper-parameters): a checkpoint with another fingerprint is never resumed."""

    def __init__(self, storage: CheckpointStorage, fingerprint: str) -> None:
        self.storage = storage
        self.fingerprint = fingerprint

    def _manifest(self, slot: str) -> dict[str, Any] | None:
        try:
            manifest = json.loads(self.storage.read(f"{slot}/{MANIFEST}"))
        except (FileNotFoundError, ValueError):
            return None
        if not manifest.get("complete") or manifest.get("fingerprint") != self.fingerprint:
            return None
        return manifest

    def _complete_slots(self) -> list[tuple[str, dict[str, Any]]]:
        """(slot, manifest) of the complete slots, newest first."""
        found = [(slot, m) for slot in SLOTS if (m := self._manifest(slot)) is not None]
        return sorted(found, key=lambda item: item[1]["state"]["step"], reverse=True)

    def latest(self) -> StoredCheckpoint | None:
        """The newest complete checkpoint whose blobs match their recorded sha256."""
        for slot, manifest in self._complete_slots():
            blobs = {}
            for name, digest in manifest["files"].items():
                try:
                    data = self.storage.read(f"{slot}/{name}")
                except FileNotFoundError:
                    break
                if _sha256(data) != digest:
                    break
                blobs[name] = data
            else:
                return StoredCheckpoint(slot, blobs, manifest["state"])
        return None

    def save(self, blobs: dict[str, bytes], state: dict[str, Any]) -> str:
        """Write a checkpoint (`state` needs an int `step`) into the slot not holding the
        newest complete one; returns the slot name."""
        complete = self._complete_slots()
        slot = next(s for s in SLOTS if not complete or s != complete[0][0])
        self.storage.write(f"{slot}/{MANIFEST}", json.dumps({"complete": False}).encode())
        for name, data in blobs.items():
            self.storage.write(f"{slot}/{name}", data)
        manifest = {"format": FORMAT, "complete": True, "fingerprint": self.fingerprint,
                    "files": {name: _sha256(data) for name, data in blobs.items()},
                    "state": state}
        self.storage.write(f"{slot}/{MANIFEST}", json.dumps(manifest).encode())
        return slot


def discard_checkpoints(storage: CheckpointStorage) -> None:
    """Mark every slot incomplete and empty its blobs (the storage protocol has no delete),
    so a finished run leaves a few bytes behind instead of full training states."""
    for slot in SLOTS:
        try:
            manifest = json.loads(storage.read(f"{slot}/{MANIFEST}"))
        except (FileNotFoundError, ValueError):
            continue
        storage.write(f"{slot}/{MANIFEST}", json.dumps({"complete": False}).encode())
        for name in manifest.get("files", {}):
            storage.write(f"{slot}/{name}", b"")


def tensors_to_bytes(value: Any) -> bytes:
    """`torch.save` of tensors, numbers, strings and containers of them."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def tensors_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def capture_rng() -> dict[str, Any]:
    """Every random state training draws from: python, numpy, torch CPU, each CUDA device."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def mirror_latest(source: CheckpointStorage, target: CheckpointStorage) -> int | None:
    """Copy the newest complete checkpoint of `source` into the same slot of `target`
    (marker, blobs, manifest last) unless `target` already holds it; returns its step.

    Used to carry checkpoints that worker processes write to a local folder over to
    durable storage while they train. Blobs are checked against the manifest after
    reading, so a slot being rewritten at that moment is skipped until the next call."""
    found = []
    for slot in SLOTS:
        try:
            manifest = json.loads(source.read(f"{slot}/{MANIFEST}"))
        except (FileNotFoundError, ValueError):
            continue
        if manifest.get("complete"):
            found.append((manifest["state"]["step"], slot, manifest))
    for step, slot, manifest in sorted(found, key=lambda item: item[0], reverse=True):
        try:
            if json.loads(target.read(f"{slot}/{MANIFEST}")) == manifest:
                return step
        except (FileNotFoundError, ValueError):
            pass
        try:
            blobs = {name: source.read(f"{slot}/{name}") for name in manifest["files"]}
        except FileNotFoundError:
            continue
        if any(_sha256(data) != manifest["files"][name] for name, data in blobs.items()):
            continue
        target.write(f"{slot}/{MANIFEST}", json.dumps({"complete": False}).encode())
        for name, data in blobs.items():
            target.write(f"{slot}/{name}", data)
        target.write(f"{slot}/{MANIFEST}", json.dumps(manifest).encode())
        return step
    return None
