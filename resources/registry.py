"""Model registry on the artifact store: immutable versions, aliases moved by recorded events.

Layout under the artifact root:
    registry/<model>/blobs/<sha256>                     model files and documents, by content
    registry/<model>/versions/v0001.json                 the version record (written once)
    registry/<model>/alias_events/e000001.json           append-only alias moves
    registry/<model>/wandb_links/v0001-<status>.json     W&B registry link state (append-only)

A version exists once its record exists; the record is written with put_if_absent after
all its blobs, so a reader never sees a version with missing files and two concurrent
registrations can never claim the same number. Alias events are numbered densely the same
way; replaying them in order gives the current aliases, and a move can be conditional on
the alias still pointing where the decision assumed (compare-and-set).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from dagster import ConfigurableResource

from resources.io_manager import ArtifactIntegrityError, checked_file_name, sha256_hex
from resources.storage import ArtifactNotFoundError, ArtifactStore, ArtifactStoreResource

CHAMPION_ALIAS = "production"
LINK_STATUSES = ("pending", "linked")
Loaded = TypeVar("Loaded")


class RegistryError(RuntimeError):
    pass


class AliasConflictError(RegistryError):
    """An alias moved between the decision and the move (another registration won)."""


def _dump(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()


class ModelRegistry:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    # --- versions -----------------------------------------------------------------------

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

    def _put_blobs(self, model: str, files: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
        listed = {}
        for name, data in sorted(files.items()):
            digest = sha256_hex(data)
            self.store.put_if_absent(f"registry/{model}/blobs/{digest}", data)
            listed[checked_file_name(name)] = {"sha256": digest, "bytes": len(data)}
        return listed

    def register(
        self, model: str, save: Callable[[Path], None], record: Mapping[str, Any],
        aliases: list[str], reason: str,
        documents: Callable[[int], Mapping[str, bytes]] | None = None,
        expected: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store the files `save` writes as a new version with `record`; move `aliases` to it.

        `documents(version)` gives files that name their own version (model card,
        manifest); they are stored like model files and listed under "documents".
        `expected` (alias -> version, None = unset) makes those alias moves conditional on
        the alias still pointing there (see move_alias)."""
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            files = self._put_blobs(model, {
                path.relative_to(tmp).as_posix(): path.read_bytes()
                for path in Path(tmp).rglob("*") if path.is_file()})
        registered_at = datetime.now(UTC).isoformat()

        def version_record(version: int) -> dict[str, Any]:
            entry = {**record, "model": model, "version": version, "files": files,
                     "registered_at": registered_at}
            if documents is not None:
                entry["documents"] = self._put_blobs(model, documents(version))
            return entry

        version, entry = self._claim_next(self._versions_prefix(model),
                                          lambda n: self._version_key(model, n), version_record)
        conditions = dict(expected or {})
        for alias in aliases:
            self.move_alias(model, alias, version, reason, expected=conditions.get(alias),
                            conditional=alias in conditions)
        return entry

    def _claim_next(self, prefix: str, key_of: Callable[[int], str],
                    make: Callable[[int], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Write make(n) under key_of(n) for the next free number n (1, 2, ...).

        put_if_absent makes each claim atomic, so concurrent writers get distinct numbers,
        and the numbers order the history without relying on clocks."""
        taken = [int(Path(k).stem[1:]) for k in self.store.list_keys(prefix)]
        number = max(taken, default=0) + 1
        while True:
            value = make(number)
            if self.store.put_if_absent(key_of(number), _dump(value)):
                return number, value
            number += 1

    # --- aliases ------------------------------------------------------------------------

    def set_alias(self, model: str, alias: str, version: int, reason: str) -> None:
        """Point `alias` at `version` unconditionally (the move is recorded)."""
        self.move_alias(model, alias, version, reason)

    def move_alias(self, model: str, alias: str, version: int, reason: str,
                   expected: int | None = None, conditional: bool = False,
                   details: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append an event pointing `alias` at `version`; return the event.

        conditional=True: only if the alias still points at `expected` (None: unset). Events
        are numbered densely, so claiming number last+1 proves nobody moved anything since
        the history was read; on a lost race the history is read again and re-checked."""
        if version not in self.versions(model):
            raise RegistryError(f"{model}: no version {version} to point alias {alias!r} at")
        prefix = f"registry/{model}/alias_events/"
        while True:
            history = self.alias_history(model)
            current = _replay(history).get(alias)
            if conditional and current != expected:
                raise AliasConflictError(
                    f"{model}: alias {alias!r} points at "
                    f"{'nothing' if current is None else f'v{current}'}, not "
                    f"{'nothing' if expected is None else f'v{expected}'} as the decision for "
                    f"v{version} assumed (another registration moved it); v{version} stays "
                    "registered without it: run the registration again to judge it against "
                    "the new holder")
            number = max((e["sequence"] for e in history), default=0) + 1
            event = {"sequence": number, "alias": alias, "version": version, "reason": reason,
                     "previous": current, "at": datetime.now(UTC).isoformat(),
                     **dict(details or {})}
            if self.store.put_if_absent(f"{prefix}e{number:06d}.json", _dump(event)):
                return event

    def alias_history(self, model: str) -> list[dict[str, Any]]:
        keys = self.store.list_keys(f"registry/{model}/alias_events/")
        events = [json.loads(self.store.get_bytes(k)) for k in keys]
        return sorted(events, key=lambda e: e["sequence"])

    def aliases(self, model: str) -> dict[str, int]:
        """Current alias -> version, replayed from the event history."""
        return _replay(self.alias_history(model))

    def champion(self, model: str) -> int | None:
        """The version holding the production alias, if any."""
        return self.aliases(model).get(CHAMPION_ALIAS)

    # --- reading files back -------------------------------------------------------------

    def _verified(self, model: str, version: int, name: str, info: Mapping[str, Any]) -> bytes:
        key = f"registry/{model}/blobs/{info['sha256']}"
        data = self.store.get_bytes(key)
        actual = sha256_hex(data)
        if actual != info["sha256"]:
            raise ArtifactIntegrityError(
                f"{model} v{version}: {name} fails its sha256 check ({self.store.uri_of(key)} "
                f"has sha256 {actual}, the version record says {info['sha256']}); the stored "
                "file was changed after registration. Refusing to use it: restore the blob "
                "from a backup or register a new version")
        return data

    def download(self, model: str, version: int, target: Path) -> Path:
        """Write a version's files into `target`, verifying each sha256."""
        for name, info in self.get(model, version)["files"].items():
            path = target / checked_file_name(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._verified(model, version, name, info))
        return target

    def load(self, model: str, version: int, model_type: type[Loaded]) -> Loaded:
        """A registered model, loaded as `model_type` after every file's sha256 is checked."""
        with tempfile.TemporaryDirectory() as tmp:
            return model_type.load(self.download(model, version, Path(tmp)))

    def document(self, model: str, version: int, name: str) -> bytes:
        """A version's document (model card, manifest, ...), sha256-checked."""
        documents = self.get(model, version).get("documents", {})
        if name not in documents:
            raise ArtifactNotFoundError(
                f"{model} v{version} has no document {name!r} (it has: "
                f"{', '.join(sorted(documents)) or 'none'})")
        return self._verified(model, version, name, documents[name])

    # --- W&B registry links -------------------------------------------------------------

    def record_wandb_link(self, model: str, version: int, link: Mapping[str, Any]) -> bool:
        """Record a link state once (pending, then linked); False when already recorded."""
        if link.get("status") not in LINK_STATUSES:
            raise RegistryError(f"W&B link status must be one of {LINK_STATUSES}")
        key = f"registry/{model}/wandb_links/v{version:04d}-{link['status']}.json"
        return self.store.put_if_absent(key, _dump({**link, "version": version}))

    def wandb_links(self, model: str) -> dict[int, dict[str, Any]]:
        """version -> its latest link record (linked wins over pending)."""
        latest: dict[int, dict[str, Any]] = {}
        for key in self.store.list_keys(f"registry/{model}/wandb_links/"):
            link = json.loads(self.store.get_bytes(key))
            held = latest.get(link["version"])
            if held is None or LINK_STATUSES.index(link["status"]) > LINK_STATUSES.index(
                    held["status"]):
                latest[link["version"]] = link
        return dict(sorted(latest.items()))

    def models(self) -> list[str]:
        """Every model name with at least one version."""
        keys = self.store.list_keys("registry/")
        return sorted({k.split("/")[1] for k in keys if "/versions/" in k})


def _replay(history: list[dict[str, Any]]) -> dict[str, int]:
    current: dict[str, int] = {}
    for event in history:
        current[event["alias"]] = event["version"]
    return current


class ModelRegistryResource(ConfigurableResource):
    store: ArtifactStoreResource

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.store.open())
