"""IO manager: every asset output stored as code-free files with sha256, verified on load.

Layout under the artifact root:
    assets/<asset key>[/<partition>]/<run id>/<files> + manifest.json   (never overwritten)
    assets/<asset key>[/<partition>]/current.json                        (the version in use)

What a file is loaded *as* comes from the consuming asset's type annotation, never from
the stored manifest, so loading cannot execute code.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import typing
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

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

    def load_input(self, context: InputContext) -> Any:
        store = self.store.open()
        declared = context.dagster_type.typing_type
        key_path = list(context.asset_key.path)
        if context.has_asset_partitions and typing.get_origin(declared) is dict:
            # A partitioned upstream read whole: one entry per partition that has data.
            value_type = typing.get_args(declared)[1]
            loaded, missing = {}, []
            for partition in context.asset_partition_keys:
                try:
                    loaded[partition], _ = read_version(
                        store, self._base(key_path, partition), value_type
                    )
                except ArtifactNotFoundError:
                    missing.append(partition)
            if missing:
                context.log.warning(
                    f"{context.asset_key.to_user_string()}: no stored data for partition(s) "
                    f"{missing}; they are left out"
                )
            return loaded
        partition = context.asset_partition_key if context.has_asset_partitions else None
        value, _ = read_version(store, self._base(key_path, partition), declared)
        return value


def stored_base(asset_key_path: list[str], partition: str | None = None) -> str:
    """Where ArtifactIOManager keeps an asset's (partition's) versions and current.json."""
    return ArtifactIOManager._base(asset_key_path, partition)
