"""Records the data gates keep on the artifact store.

Layout under the artifact root:
    quarantine/<landing file name>.json          a batch that is quarantined now
    quarantine/.history/<name>.<time>.json       records that were cleared or replaced
    data_quality/training_data/accepted.json     the newest training_data version that
                                                 passed the gates
    data_quality/training_data/<version>/drift_profile.json
    data_quality/training_data/<version>/accepted.json   that version passed the gates

A landing file may sit in a folder, even one called `history`: archives go under
`.history/`, a name no landing file can have (hidden names are never ingested), so every
quarantined file, nested or not, is listed as active. Archives written under `history/`
before are still read, and told apart by what they record (when they were cleared or
replaced).

A quarantine record is written when a landing file fails its batch suite and removed (kept
under history/) when a new upload of the same name passes. The landing file itself is never
touched. Records are plain JSON: `file`, `sha256`, `reasons` (plain-language messages),
`failed_expectations` (with examples), `action`, and when/by which run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from resources.storage import ArtifactNotFoundError, ArtifactStore

QUARANTINE_PREFIX = "quarantine/"
HISTORY_PREFIX = "quarantine/.history/"
LEGACY_HISTORY_PREFIX = "quarantine/history/"
_ARCHIVE_KEYS = ("cleared_at", "replaced_at")
TRAINING_BASELINE_PREFIX = "data_quality/training_data/"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _read_json(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(key))
    except ArtifactNotFoundError:
        return None


def _write_json(store: ArtifactStore, key: str, value: dict[str, Any]) -> None:
    store.put_bytes(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def _is_archive(record: dict[str, Any]) -> bool:
    return any(k in record for k in _ARCHIVE_KEYS)


class QuarantineStore:
    """Quarantine records of landing batches."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def key(name: str) -> str:
        return f"{QUARANTINE_PREFIX}{name}.json"

    def uri(self, name: str) -> str:
        return self.store.uri_of(self.key(name))

    def get(self, name: str) -> dict[str, Any] | None:
        return _read_json(self.store, self.key(name))

    def active(self) -> dict[str, dict[str, Any]]:
        """Landing file name -> its quarantine record, for every batch quarantined now."""
        records = {}
        for key in self.store.list_keys(QUARANTINE_PREFIX):
            if key.startswith(HISTORY_PREFIX) or not key.endswith(".json"):
                continue
            record = _read_json(self.store, key)
            if record is None or (key.startswith(LEGACY_HISTORY_PREFIX) and _is_archive(record)):
                continue
            records[str(record.get("file") or key[len(QUARANTINE_PREFIX):-5])] = record
        return records

    def history(self, name: str) -> list[dict[str, Any]]:
        found = []
        for prefix in (HISTORY_PREFIX, LEGACY_HISTORY_PREFIX):
            for key in self.store.list_keys(f"{prefix}{name}."):
                record = _read_json(self.store, key) if key.endswith(".json") else None
                if record is not None and _is_archive(record) and record.get("file") == name:
                    found.append(record)
        return found

    def _archive(self, name: str, record: dict[str, Any], **why: Any) -> None:
        _write_json(self.store, f"{HISTORY_PREFIX}{name}.{_stamp()}.json", {**record, **why})

    def put(self, record: dict[str, Any]) -> str:
        """Write the record of a quarantined batch; a record it replaces goes to history."""
        name = str(record["file"])
        old = self.get(name)
        if old is not None and old.get("sha256") != record.get("sha256"):
            self._archive(name, old, replaced_at=_now(), replaced_by_sha256=record.get("sha256"))
        _write_json(self.store, self.key(name), {"quarantined_at": _now(), **record})
        return self.uri(name)

    def clear(self, name: str, **why: Any) -> bool:
        """A new upload of `name` passed: move its record to history. True if there was one."""
        old = self.get(name)
        if old is None:
            return False
        self._archive(name, old, cleared_at=_now(), **why)
        self.store.delete(self.key(name))
        return True


class TrainingDataBaseline:
    """Which training_data version the drift check compares with, and its drift profile."""

    ACCEPTED = f"{TRAINING_BASELINE_PREFIX}accepted.json"

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def profile_key(version: str) -> str:
        return f"{TRAINING_BASELINE_PREFIX}{version}/drift_profile.json"

    def accepted(self) -> dict[str, Any] | None:
        return _read_json(self.store, self.ACCEPTED)

    def profile(self, version: str) -> dict[str, Any] | None:
        return _read_json(self.store, self.profile_key(version))

    def save_profile(self, version: str, profile: dict[str, Any]) -> None:
        _write_json(self.store, self.profile_key(version), profile)

    @staticmethod
    def accepted_key(version: str) -> str:
        return f"{TRAINING_BASELINE_PREFIX}{version}/accepted.json"

    def is_accepted(self, version: str) -> bool:
        """Whether `version` passed the gates (a record written before per-version marks
        counts through `accepted.json`)."""
        if self.store.exists(self.accepted_key(version)):
            return True
        legacy = self.accepted()
        return legacy is not None and legacy.get("version") == version

    def accept(self, version: str, **info: Any) -> None:
        """Make `version` the baseline (it passed the quality and drift gates). The mark
        beside its profile lets a run started earlier tell it apart from versions accepted
        before it started; `accepted.json` names the newest one."""
        record = {"version": version, "accepted_at": _now(), **info}
        _write_json(self.store, self.accepted_key(version), record)
        _write_json(self.store, self.ACCEPTED, record)
