"""Model registry on the artifact store: immutable versions, aliases moved by recorded events.

Layout under the artifact root:
    registry/<model>/blobs/<sha256>                     model files, content-addressed
    registry/<model>/versions/v0001.json                 the version record (written once)
    registry/<model>/alias_events/<time>-<uuid>.json     append-only alias moves

A version exists once its record exists; the record is written with put_if_absent after
all its blobs, so a reader never sees a version with missing files and two concurrent
registrations can never claim the same number.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from resources.io_manager import ArtifactIntegrityError, checked_file_name, sha256_hex
from resources.storage import ArtifactStore, ArtifactStoreResource


class RegistryError(RuntimeError):
    pass


class ModelRegistry:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _versions_prefix(self, model: str) -> str:
        return f"registry/{model}/versions/"

    def versions(self, model: str) -> list[int]:
        prefix = self._versions_prefix(model)
        return sorted(
            int(Path(k).stem[1:]) for k in self.store.list_keys(prefix) if k.endswith(".json")
        )

    def _version_key(self, model: str, version: int) -> str:
        return f"{self._versions_prefix(model)}v{version:04d}.json"

    def get(self, model: str, version: int) -> dict[str, Any]:
        return json.loads(self.store.get_bytes(self._version_key(model, version)))

    def register(
        self, model: str, save: Callable[[Path], None], record: Mapping[str, Any],
        aliases: list[str], reason: str,
    ) -> dict[str, Any]:
        """Store the files `save` writes as a new version with `record`; move `aliases` to it."""
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            files = {}
            for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                data = path.read_bytes()
                digest = sha256_hex(data)
                self.store.put_if_absent(f"registry/{model}/blobs/{digest}", data)
                files[path.relative_to(tmp).as_posix()] = {"sha256": digest, "bytes": len(data)}
        registered_at = datetime.now(UTC).isoformat()

        def version_record(version: int) -> dict[str, Any]:
            return {**record, "model": model, "version": version, "files": files,
                    "registered_at": registered_at}

        version = self._claim_next(self._versions_prefix(model),
                                   lambda n: self._version_key(model, n), version_record)
        entry = version_record(version)
        for alias in aliases:
            self.set_alias(model, alias, version, reason)
        return entry

    def set_alias(self, model: str, alias: str, version: int, reason: str) -> None:
        if version not in self.versions(model):
            raise RegistryError(f"{model}: no version {version} to point alias {alias!r} at")
        at = datetime.now(UTC).isoformat()
        prefix = f"registry/{model}/alias_events/"
        self._claim_next(prefix, lambda n: f"{prefix}e{n:06d}.json", lambda n: {
            "sequence": n, "alias": alias, "version": version, "reason": reason, "at": at})

    def _claim_next(self, prefix: str, key_of: Callable[[int], str],
                    make: Callable[[int], dict[str, Any]]) -> int:
        """Write make(n) under key_of(n) for the next free number n (1, 2, ...); return n.

        put_if_absent makes each claim atomic, so concurrent writers get distinct numbers,
        and the numbers order the history without relying on clocks."""
        taken = [int(Path(k).stem[1:]) for k in self.store.list_keys(prefix)]
        number = max(taken, default=0) + 1
        while not self.store.put_if_absent(
            key_of(number), json.dumps(make(number), indent=2, sort_keys=True, default=str).encode()
        ):
            number += 1
        return number

    def alias_history(self, model: str) -> list[dict[str, Any]]:
        keys = self.store.list_keys(f"registry/{model}/alias_events/")
        return [json.loads(self.store.get_bytes(k)) for k in keys]

    def aliases(self, model: str) -> dict[str, int]:
        """Current alias -> version, replayed from the event history."""
        current: dict[str, int] = {}
        for event in self.alias_history(model):
            current[event["alias"]] = event["version"]
        return current

    def download(self, model: str, version: int, target: Path) -> Path:
        """Write a version's files into `target`, verifying each sha256."""
        for name, info in self.get(model, version)["files"].items():
            data = self.store.get_bytes(f"registry/{model}/blobs/{info['sha256']}")
            if sha256_hex(data) != info["sha256"]:
                raise ArtifactIntegrityError(f"{model} v{version}: {name} fails its sha256 check")
            path = target / checked_file_name(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return target


class ModelRegistryResource(ConfigurableResource):
    store: ArtifactStoreResource

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.store.open())
