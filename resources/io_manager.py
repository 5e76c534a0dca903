"""IO manager: every asset output stored as code-free files with sha256, verified on load.

Layout under the artifact root:
    assets/<asset key>[/<partition>]/<run id>/<files> + manifest.json   (never overwritten)
    assets/<asset key>[/<partition>]/current.json                        (the newest version)

A step inside a Dagster run never reads `current.json`: runs overlap (schedule, sensors,
retrain requests), and the newest version may belong to another run. It reads the version
its run pinned (see `pinned_version`).

What a file is loaded *as* comes from the consuming asset's type annotation, never from
the stored manifest, so loading cannot execute code.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    ConfigurableIOManager,
    ConfigurableResource,
    DagsterInstance,
    DagsterInvariantViolationError,
    EventLogRecord,
    InitResourceContext,
    InputContext,
    OutputContext,
)
from pydantic import PrivateAttr

from resources.storage import ArtifactNotFoundError, ArtifactStore, ArtifactStoreResource

TABLE_FILE = "table.parquet"
JSON_FILE = "value.json"


class ArtifactIntegrityError(RuntimeError):
    """A stored file does not match the sha256 recorded when it was written."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checked_file_name(name: str) -> str:
    """A stored file name must stay inside its folder (a tampered manifest could say '../')."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ArtifactIntegrityError(f"refusing stored file name {name!r}: not a relative path")
    return name


def _serialize(obj: Any, workdir: Path) -> str:
    """Write `obj` as files into `workdir`; return the format name."""
    if isinstance(obj, pd.DataFrame):
        obj.to_parquet(workdir / TABLE_FILE, index=False)
        return "parquet"
    if isinstance(obj, dict | list):
        (workdir / JSON_FILE).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return "json"
    if hasattr(obj, "save") and hasattr(type(obj), "load"):
        obj.save(workdir)
        return "artifact"
    raise TypeError(
        f"cannot store a {type(obj).__name__}: return a DataFrame, a JSON-able dict/list, "
        "or an object with save(directory) and classmethod load(directory)"
    )


def _deserialize(declared: Any, workdir: Path) -> Any:
    if declared is pd.DataFrame:
        return pd.read_parquet(workdir / TABLE_FILE)
    if declared in (dict, list) or typing.get_origin(declared) in (dict, list):
        return json.loads((workdir / JSON_FILE).read_text())
    if isinstance(declared, type) and hasattr(declared, "load"):
        return declared.load(workdir)
    raise TypeError(
        f"cannot load an input declared as {declared!r}: annotate it as pd.DataFrame, dict, "
        "or a class with classmethod load(directory)"
    )


def write_version(store: ArtifactStore, base: str, version: str, obj: Any) -> dict[str, Any]:
    """Store `obj` as a new version under `base`, then point `current.json` at it."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fmt = _serialize(obj, workdir)
        files = {}
        for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
            name = path.relative_to(workdir).as_posix()
            data = path.read_bytes()
            store.put_bytes(f"{base}/{version}/{name}", data)
            files[name] = {"sha256": sha256_hex(data), "bytes": len(data)}
    manifest = {
        "version": version,
        "format": fmt,
        "type": type(obj).__name__,
        "files": files,
        "written_at": datetime.now(UTC).isoformat(),
        "uri": store.uri_of(f"{base}/{version}"),
    }
    blob = json.dumps(manifest, indent=2, sort_keys=True).encode()
    store.put_bytes(f"{base}/{version}/manifest.json", blob)
    store.put_bytes(f"{base}/current.json", blob)  # last: a reader never sees a partial version
    return manifest


def read_version(store: ArtifactStore, base: str, declared: Any) -> tuple[Any, dict[str, Any]]:
    """Load the current version under `base` as `declared`, verifying every file's sha256."""
    current = json.loads(store.get_bytes(f"{base}/current.json"))
    return read_version_at(store, base, current["version"], declared)


def read_current_manifest(store: ArtifactStore, base: str) -> dict[str, Any] | None:
    """The manifest `current.json` points at under `base`, or None when nothing is stored."""
    try:
        return json.loads(store.get_bytes(f"{base}/current.json"))
    except ArtifactNotFoundError:
        return None


def read_version_at(
    store: ArtifactStore, base: str, version: str, declared: Any
) -> tuple[Any, dict[str, Any]]:
    """Load one stored version (current or older) as `declared`, verifying every sha256."""
    manifest = json.loads(store.get_bytes(f"{base}/{version}/manifest.json"))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, info in manifest["files"].items():
            key = f"{base}/{version}/{name}"
            data = store.get_bytes(key)
            if sha256_hex(data) != info["sha256"]:
                raise ArtifactIntegrityError(
                    f"{store.uri_of(key)}: sha256 {sha256_hex(data)} does not match the "
                    f"recorded {info['sha256']}; the file was changed after it was written. "
                    "Re-materialize the asset."
                )
            target = workdir / checked_file_name(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return _deserialize(declared, workdir), manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """One hash for a whole stored version: the content hash of its files."""
    joined = "".join(f"{n}:{i['sha256']}" for n, i in sorted(manifest["files"].items()))
    return sha256_hex(joined.encode())


@dataclass(frozen=True)
class PinnedVersion:
    """The stored version of an asset (partition) a run reads, and where it came from."""

    version: str  # the Dagster run id that wrote it: the folder name under the asset's base
    artifact_sha256: str | None  # manifest_digest of the stored files, as recorded at write
    written_by_this_run: bool


def run_start_timestamp(instance: DagsterInstance, run_id: str) -> float | None:
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    return record.start_time or record.create_timestamp.timestamp()


def pinned_version(instance: DagsterInstance, run_id: str, asset_key: AssetKey,
                   partition: str | None = None) -> PinnedVersion | None:
    """The version of `asset_key` (`partition`) that run `run_id` reads (see pinned_record)."""
    record = pinned_record(instance, run_id, asset_key, partition)
    if record is None:
        return None
    digest = record.asset_materialization.metadata.get("artifact_sha256")
    return PinnedVersion(record.run_id, None if digest is None else digest.value,
                         record.run_id == run_id)


def _stored_records(instance: DagsterInstance, asset_key: AssetKey,
                    partition: str | None) -> Iterator[EventLogRecord]:
    """Materialization records of `asset_key` (`partition`) that stored a version, newest
    first. Records without `artifact_uri` stored nothing (a quarantined batch)."""
    cursor = None
    while True:
        page = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key,
                               asset_partitions=None if partition is None else [partition]),
            limit=50, cursor=cursor, ascending=False)
        for record in page.records:
            metadata = record.asset_materialization.metadata if record.asset_materialization \
                else {}
            if "artifact_uri" in metadata:
                yield record
        if not page.has_more:
            return
        cursor = page.cursor


def pinned_record(instance: DagsterInstance, run_id: str, asset_key: AssetKey,
                  partition: str | None = None) -> EventLogRecord | None:
    """The materialization record of the version of `asset_key` (`partition`) that run
    `run_id` reads.

    One rule, answered by the instance's materialization records: the newest stored version
    written by this run itself, else the newest one written before this run started. A
    version another run wrote after this run started is never chosen, so a run's steps see
    exactly one set of inputs however runs overlap. The records are the source rather than
    pins saved at a run's first step because they need no extra state, hold for every step
    of the run (the first one included) and for every executor, and say which run wrote each
    version. Records that stored nothing are skipped, so the version before them stays in
    use, as `current.json` does. None when the instance has no stored version of the asset:
    the caller falls back to `current.json`. ArtifactNotFoundError when all stored versions
    were written by other runs after this one started: for this run the asset did not exist
    yet.
    """
    started = run_start_timestamp(instance, run_id)
    if started is None:
        return None
    later = None
    for record in _stored_records(instance, asset_key, partition):
        if record.run_id == run_id or record.timestamp < started:
            return record
        later = record.run_id
    if later is None:
        return None
    where = asset_key.to_user_string() + ("" if partition is None else f"[{partition}]")
    raise ArtifactNotFoundError(
        f"{where}: the only stored versions were written after run {run_id} started (run "
        f"{later} and later); this run does not read them")


def earlier_records(instance: DagsterInstance, run_id: str, asset_key: AssetKey,
                    partition: str | None = None) -> Iterator[EventLogRecord]:
    """The stored versions of `asset_key` (`partition`) written before run `run_id` started,
    newest first: what the run may take as a previous version (pinned_record's rule,
    without the run's own versions)."""
    started = run_start_timestamp(instance, run_id)
    if started is None:
        return
    for record in _stored_records(instance, asset_key, partition):
        if record.run_id != run_id and record.timestamp < started:
            yield record


def _run_of(context: InputContext) -> tuple[DagsterInstance, str] | None:
    """The instance and run id of the consuming step; None when loading outside a run."""
    try:
        step = context.step_context
        return context.instance, step.run_id
    except DagsterInvariantViolationError:
        return None


class ArtifactIOManager(ConfigurableIOManager):
    store: ArtifactStoreResource

    @staticmethod
    def _base(asset_key_path: list[str], partition: str | None) -> str:
        parts = ["assets", *asset_key_path]
        if partition is not None:
            parts.append(partition)
        return "/".join(parts)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_partition_key else None
        base = self._base(list(context.asset_key.path), partition)
        manifest = write_version(self.store.open(), base, context.run_id, obj)
        context.add_output_metadata({
            "artifact_uri": manifest["uri"],
            "artifact_sha256": manifest_digest(manifest),
            "artifact_bytes": sum(f["bytes"] for f in manifest["files"].values()),
        })

    def _read(self, store: ArtifactStore, context: InputContext, partition: str | None,
              declared: Any) -> Any:
        """This run's version of the input (see `pinned_version`), verified."""
        base = self._base(list(context.asset_key.path), partition)
        run = _run_of(context)
        pin = None if run is None else pinned_version(*run, context.asset_key, partition)
        if pin is None:
            value, _ = read_version(store, base, declared)
        else:
            value, _ = read_version_at(store, base, pin.version, declared)
        return value

    def load_input(self, context: InputContext) -> Any:
        store = self.store.open()
        declared = context.dagster_type.typing_type
        if context.has_asset_partitions and typing.get_origin(declared) is dict:
            # A partitioned upstream read whole: one entry per partition that has data.
            value_type = typing.get_args(declared)[1]
            loaded, missing = {}, []
            for partition in context.asset_partition_keys:
                try:
                    loaded[partition] = self._read(store, context, partition, value_type)
                except ArtifactNotFoundError:
                    missing.append(partition)
            if missing:
                context.log.warning(
                    f"{context.asset_key.to_user_string()}: no stored data for partition(s) "
                    f"{missing}; they are left out"
                )
            return loaded
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self._read(store, context, partition, declared)


def stored_base(asset_key_path: list[str], partition: str | None = None) -> str:
    """Where ArtifactIOManager keeps an asset's (partition's) versions and current.json."""
    return ArtifactIOManager._base(asset_key_path, partition)


class StoredAssetsResource(ConfigurableResource):
    """Read access to what ArtifactIOManager stored on the same artifact store: an asset's
    current version, one version by id, and inside a run the versions that run may read
    (`pinned_record`'s rule). Assets take earlier versions through this resource, never
    from the store's layout, so the store they read moves with the resource."""

    store: ArtifactStoreResource
    _instance: DagsterInstance | None = PrivateAttr(None)
    _run_id: str | None = PrivateAttr(None)
    _opened: ArtifactStore | None = PrivateAttr(None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._instance = context.instance
        self._run_id = None if context.run is None else context.run.run_id

    def _store(self) -> ArtifactStore:
        # One client for every read (S3: building a client costs more than a small read).
        if self._opened is None:
            self._opened = self.store.open()
        return self._opened

    def current_manifest(self, asset_key_path: list[str],
                         partition: str | None = None) -> dict[str, Any] | None:
        """The manifest of the newest stored version (`current.json`), or None."""
        return read_current_manifest(self._store(), stored_base(asset_key_path, partition))

    def read_version(self, asset_key_path: list[str], version: str, declared: Any,
                     partition: str | None = None) -> tuple[Any, dict[str, Any]]:
        """One stored version loaded as `declared`, every file's sha256 verified."""
        return read_version_at(self._store(), stored_base(asset_key_path, partition),
                               version, declared)

    def _run(self) -> tuple[DagsterInstance, str]:
        if self._instance is None or self._run_id is None:
            raise RuntimeError("stored_assets: run-pinned versions are only known inside a run")
        return self._instance, self._run_id

    def pinned_record(self, asset_key: AssetKey,
                      partition: str | None = None) -> EventLogRecord | None:
        """The record of the version of `asset_key` this run reads (see pinned_record)."""
        return pinned_record(*self._run(), asset_key, partition)

    def earlier_records(self, asset_key: AssetKey,
                        partition: str | None = None) -> Iterator[EventLogRecord]:
        """Versions of `asset_key` written before this run started, newest first."""
        return earlier_records(*self._run(), asset_key, partition)
