"""Model registry on the artifact store: immutable versions, aliases moved by recorded events.

Layout under the artifact root:
    registry/<model>/blobs/<sha256>                     model files and documents, by content
    registry/<model>/versions/v0001.json                 the version record (written once)
    registry/<model>/alias_events/e000001.json           append-only log: commits, alias moves
    registry/<model>/wandb_links/v0001-<status>.json     W&B registry link state (append-only)

A registration writes its blobs, then its record (put_if_absent claims the number, so two
concurrent registrations never share one), then ONE commit event in the alias log that holds
the version's decision and every alias move it makes. Readers see a version only once its
commit event exists and derive both the version's "decision" view and the aliases from the
same log, so a process killed at any write leaves either the old state or the new one, never
a record that disagrees with the aliases. Events are numbered densely; claiming number
last+1 proves nobody moved anything since the log was read, which makes conditional moves
compare-and-set. Records written before commit events existed (no "commit" field) are
visible as they are. A blob that already exists is hash-checked before a version points at
it, and replaced when it fails (content addressing: the new bytes are the right ones).

`resources/registry_audit.py` checks all of this (`cli registry verify`) and repairs what
it can (`cli registry repair`).
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
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


COMMIT_LOG = "alias_events"  # where a version record says its commit event lives


class ModelRegistry:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        # Events and records are immutable once written: each is read once per instance.
        self._event_cache: dict[str, dict[str, Any]] = {}
        self._record_cache: dict[str, dict[str, Any]] = {}

    # --- versions -----------------------------------------------------------------------

    def _versions_prefix(self, model: str) -> str:
        return f"registry/{model}/versions/"

    def _events_prefix(self, model: str) -> str:
        return f"registry/{model}/alias_events/"

    def blob_key(self, model: str, digest: str) -> str:
        return f"registry/{model}/blobs/{digest}"

    def record_numbers(self, model: str) -> list[int]:
        """Every stored version record, committed or not."""
        prefix = self._versions_prefix(model)
        return sorted(
            int(Path(k).stem[1:]) for k in self.store.list_keys(prefix) if k.endswith(".json"))

    def versions(self, model: str) -> list[int]:
        """The committed versions (a record whose registration stopped before its commit
        event is not a version yet; see registry_audit)."""
        commits = self.commits(model)
        return [n for n in self.record_numbers(model)
                if n in commits or self.raw_record(model, n).get("commit") is None]

    def version_key(self, model: str, version: int) -> str:
        return f"{self._versions_prefix(model)}v{version:04d}.json"

    def raw_record(self, model: str, version: int) -> dict[str, Any]:
        """The record as written, without its decision view (committed or not)."""
        key = self.version_key(model, version)
        if key not in self._record_cache:
            self._record_cache[key] = json.loads(self.store.get_bytes(key))
        return copy.deepcopy(self._record_cache[key])

    def get(self, model: str, version: int) -> dict[str, Any]:
        """A committed version's record with its "decision": the alias moves its commit
        event made (read from the same log the aliases are replayed from)."""
        record = self.raw_record(model, version)
        if record.get("commit") is None:
            return record
        commit = self.commits(model).get(version)
        if commit is None:
            raise ArtifactNotFoundError(
                f"{model} v{version} was never committed: its registration stopped after "
                "writing the record and before its decision; `python -m trending_assets.cli "
                "registry repair` completes or discards it")
        record.pop("commit")
        record["decision"] = {
            "sequence": commit["sequence"], "committed_at": commit["at"],
            "aliases": [m["alias"] for m in commit["moves"]], "conflict": commit["conflict"]}
        return record

    def _put_blobs(self, model: str, files: Mapping[str, bytes],
                   replaced: list[str]) -> dict[str, dict[str, Any]]:
        """Store files by content. A blob already there is hash-checked before the version
        points at it; one that fails is overwritten with these bytes, which are by
        definition the right content for its name (its name is their sha256)."""
        listed = {}
        for name, data in sorted(files.items()):
            digest = sha256_hex(data)
            key = self.blob_key(model, digest)
            if not self.store.put_if_absent(key, data):
                try:
                    intact = sha256_hex(self.store.get_bytes(key)) == digest
                except ArtifactNotFoundError:  # collected between the two calls
                    intact = False
                if not intact:
                    self.store.put_bytes(key, data)
                    replaced.append(name)
            listed[checked_file_name(name)] = {"sha256": digest, "bytes": len(data)}
        return listed

    def register(
        self, model: str, save: Callable[[Path], None], record: Mapping[str, Any],
        aliases: list[str], reason: str,
        documents: Callable[[int], Mapping[str, bytes]] | None = None,
        expected: Mapping[str, Any] | None = None,
        verify: Sequence[int] = (),
    ) -> dict[str, Any]:
        """Store the files `save` writes as a new version with `record`; move `aliases` to it.

        `documents(version)` gives files that name their own version (model card,
        manifest); they are stored like model files and listed under "documents".
        `expected` (alias -> version, None = unset) makes those alias moves conditional on
        the alias still pointing there: on a conflict the version is committed without
        any move and AliasConflictError is raised. Before anything is committed the new
        version's files and those of every version in `verify` (the champion it was judged
        against) are read back and sha256-checked; a damaged one stops the registration
        with ArtifactIntegrityError naming the file (nothing committed)."""
        replaced: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            files = self._put_blobs(model, {
                path.relative_to(tmp).as_posix(): path.read_bytes()
                for path in Path(tmp).rglob("*") if path.is_file()}, replaced)
        registered_at = datetime.now(UTC).isoformat()
        conditions = dict(expected or {})

        def version_record(version: int) -> dict[str, Any]:
            entry = {**record, "model": model, "version": version, "files": files,
                     "registered_at": registered_at,
                     "commit": {"log": COMMIT_LOG, "aliases": list(aliases), "reason": reason,
                                "expected": conditions}}
            if documents is not None:
                entry["documents"] = self._put_blobs(model, documents(version), replaced)
                self.check_files(model, version, {"documents": entry["documents"]})
            if replaced:
                entry["replaced_blobs"] = sorted(set(replaced))
            return entry

        # Read back before anything is committed: a blob replaced above may be the one the
        # champion's record names, so the champion is checked after this version's writes.
        for other in verify:
            self.check_files(model, other, self.raw_record(model, other))
        self.check_files(model, "(new version)", {"files": files})

        version, _ = self._claim_next(self._versions_prefix(model),
                                      lambda n: self.version_key(model, n), version_record)
        commit = self.commit(model, version)
        if commit["conflict"]:
            raise AliasConflictError(commit["conflict"])
        return self.get(model, version)

    def commit(self, model: str, version: int) -> dict[str, Any]:
        """Append the commit event of a stored record: its decision and all its alias moves
        in one write (none when a conditional alias moved meanwhile). Returns the event;
        an already committed version returns its existing one."""
        intent = self.raw_record(model, version)["commit"]
        expected = intent["expected"]
        while True:
            events = self._events(model)
            done = next((e for e in events if e.get("kind") == "commit"
                         and e["version"] == version), None)
            if done is not None:
                return done
            current = _replay(_flatten(events))
            conflicts = [_conflict_message(model, a, current.get(a), expected[a], version)
                         for a in intent["aliases"]
                         if a in expected and current.get(a) != expected[a]]
            number = max((e["sequence"] for e in events), default=0) + 1
            event = {"sequence": number, "kind": "commit", "version": version,
                     "reason": intent["reason"], "at": datetime.now(UTC).isoformat(),
                     "moves": [] if conflicts else [
                         {"alias": a, "previous": current.get(a)} for a in intent["aliases"]],
                     "conflict": "; ".join(conflicts) or None}
            if self.store.put_if_absent(f"{self._events_prefix(model)}e{number:06d}.json",
                                        _dump(event)):
                return event

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
        while True:
            events = self._events(model)
            current = _replay(_flatten(events)).get(alias)
            if conditional and current != expected:
                raise AliasConflictError(
                    _conflict_message(model, alias, current, expected, version))
            number = max((e["sequence"] for e in events), default=0) + 1
            event = {"sequence": number, "alias": alias, "version": version, "reason": reason,
                     "previous": current, "at": datetime.now(UTC).isoformat(),
                     **dict(details or {})}
            if self.store.put_if_absent(f"{self._events_prefix(model)}e{number:06d}.json",
                                        _dump(event)):
                return event

    def _events(self, model: str) -> list[dict[str, Any]]:
        """The raw log (commit events and single moves), in order."""
        events = []
        for key in self.store.list_keys(self._events_prefix(model)):
            if key not in self._event_cache:
                self._event_cache[key] = json.loads(self.store.get_bytes(key))
            events.append(self._event_cache[key])
        return sorted(events, key=lambda e: e["sequence"])

    def commits(self, model: str) -> dict[int, dict[str, Any]]:
        """version -> its commit event."""
        found: dict[int, dict[str, Any]] = {}
        for event in self._events(model):
            if event.get("kind") == "commit":
                found.setdefault(event["version"], event)  # the first commit is the commit
        return found

    def alias_history(self, model: str) -> list[dict[str, Any]]:
        """Every alias move in order, one entry per alias (a commit moving two aliases
        gives two entries with its sequence number)."""
        return _flatten(self._events(model))

    def aliases(self, model: str) -> dict[str, int]:
        """Current alias -> version, replayed from the event history."""
        return _replay(self.alias_history(model))

    def alias_holder(self, model: str, alias: str) -> dict[str, Any] | None:
        """The move that put `alias` where it points now (version, at, reason, previous),
        or None when it was never set."""
        moves = [m for m in self.alias_history(model) if m["alias"] == alias]
        return moves[-1] if moves else None

    def champion(self, model: str) -> int | None:
        """The version holding the production alias, if any."""
        return self.aliases(model).get(CHAMPION_ALIAS)

    # --- reading files back -------------------------------------------------------------

    def check_files(self, model: str, version: int | str, record: Mapping[str, Any]) -> None:
        """sha256-check every file and document `record` lists (ArtifactIntegrityError or
        ArtifactNotFoundError naming the first that fails)."""
        for group in ("files", "documents"):
            for name, info in record.get(group, {}).items():
                self._verified(model, version, name, info)

    def _verified(self, model: str, version: int | str, name: str,
                  info: Mapping[str, Any]) -> bytes:
        key = self.blob_key(model, info["sha256"])
        try:
            data = self.store.get_bytes(key)
        except ArtifactNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"{model} {_label(version)}: {name} is missing ({self.store.uri_of(key)} is gone); "
                "restore the blob from a backup or register a new version") from exc
        actual = sha256_hex(data)
        if actual != info["sha256"]:
            raise ArtifactIntegrityError(
                f"{model} {_label(version)}: {name} fails its sha256 check "
                f"({self.store.uri_of(key)} has sha256 {actual}, the version record says "
                f"{info['sha256']}); the stored "
                "file was changed after registration. Refusing to use it: restore the blob "
                "from a backup or register a new version (identical model files replace it)")
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


def _label(version: int | str) -> str:
    return f"v{version}" if isinstance(version, int) else version


def _flatten(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw log -> one entry per alias move."""
    moves = []
    for event in events:
        if event.get("kind") != "commit":
            moves.append(event)
            continue
        for move in event["moves"]:
            moves.append({"sequence": event["sequence"], "alias": move["alias"],
                          "version": event["version"], "reason": event["reason"],
                          "previous": move["previous"], "at": event["at"]})
    return moves


def _conflict_message(model: str, alias: str, current: int | None, expected: int | None,
                      version: int) -> str:
    def named(v: int | None) -> str:
        return "nothing" if v is None else f"v{v}"

    return (f"{model}: alias {alias!r} points at {named(current)}, not {named(expected)} as "
            f"the decision for v{version} assumed (another registration moved it); "
            f"v{version} stays registered without it: run the registration again to judge it "
            "against the new holder")


def _replay(history: list[dict[str, Any]]) -> dict[str, int]:
    current: dict[str, int] = {}
    for event in history:
        current[event["alias"]] = event["version"]
    return current


class ModelRegistryResource(ConfigurableResource):
    store: ArtifactStoreResource

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.store.open())
