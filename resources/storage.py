"""Artifact storage: one interface over a local folder and an S3 prefix.

Writes are atomic (temp file + rename locally; single PUT on S3) and `put_if_absent`
never overwrites (O_EXCL-style link locally; S3 conditional write `If-None-Match: *`),
which is what immutable registry versions rest on.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from trending_assets.ml.artifact import write_temp_beside

CHUNK_BYTES = 1 << 20


class ArtifactNotFoundError(FileNotFoundError):
    """No object stored under the key."""


class ArtifactStore(ABC):
    """Keys are '/'-separated paths relative to the store's root."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write only if nothing is stored under `key`; True when this call wrote it."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys under `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under `key` (nothing happens when there is none)."""

    @abstractmethod
    def modified_at(self, key: str) -> datetime:
        """When the object under `key` was last written (UTC)."""

    def etag(self, key: str) -> str:
        """A tag that changes with the content (S3: the ETag; elsewhere: its sha256)."""
        return hashlib.sha256(self.get_bytes(key)).hexdigest()

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def download_file(self, key: str, path: Path) -> None:
        """Write the object under `key` to the local file `path`."""
        path.write_bytes(self.get_bytes(key))

    def iter_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The object under `key` as a stream of chunks; ArtifactNotFoundError (raised on
        the first chunk) when there is none. This base reads it whole."""
        yield self.get_bytes(key)


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact key {key!r} points outside the store root {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(write_temp_beside(path, data), path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = write_temp_beside(path, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact at {self.uri_of(key)}") from exc

    def iter_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        try:
            with self._path(key).open("rb") as handle:
                while chunk := handle.read(chunk_bytes):
                    yield chunk
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact at {self.uri_of(key)}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def modified_at(self, key: str) -> datetime:
        try:
            return datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact at {self.uri_of(key)}") from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        # A plain string prefix, as on S3: "m" matches "m/x" and "mm/x".
        folder = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*")
                if p.is_file() and not p.name.endswith(".tmp"))
        return sorted(k for k in keys if k.startswith(prefix))


class S3ArtifactStore(ArtifactStore):
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                return False
            raise

    def _body(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise ArtifactNotFoundError(f"no artifact at {self.uri_of(key)}") from exc
            raise

    def get_bytes(self, key: str) -> bytes:
        return self._body(key).read()

    def iter_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        yield from self._body(key).iter_chunks(chunk_bytes)

    def download_file(self, key: str, path: Path) -> None:
        # boto3's managed transfer streams to disk in parallel parts: model weights are GBs.
        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise ArtifactNotFoundError(f"no artifact at {self.uri_of(key)}") from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise ArtifactNotFoundError(f"no artifact at {self.uri_of(key)}") from exc
            raise

    def modified_at(self, key: str) -> datetime:
        return self._head(key)["LastModified"].astimezone(UTC)

    def etag(self, key: str) -> str:
        return self._head(key)["ETag"].strip('"')

    def list_keys(self, prefix: str = "") -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI {uri!r} names no bucket")
    return bucket, prefix


class ArtifactCheckpoints:
    """The artifact store as checkpoint storage (ml.bert.checkpoint.CheckpointStorage),
    under one prefix: the Dagster run id, so a retry of the same run resumes."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    @classmethod
    def of_run(cls, store: ArtifactStore, family: str, run_id: str) -> ArtifactCheckpoints:
        """Where the training step of `family` in run `run_id` keeps its checkpoints."""
        return cls(store, f"checkpoints/{family}/{run_id}")

    def write(self, name: str, data: bytes) -> None:
        self.store.put_bytes(f"{self.prefix}/{name}", data)

    def read(self, name: str) -> bytes:
        return self.store.get_bytes(f"{self.prefix}/{name}")  # FileNotFoundError if absent


class ArtifactStoreResource(ConfigurableResource):
    """The artifact root (or the landing area) as a Dagster resource."""

    uri: str
    s3_endpoint_url: str | None = None

    def open(self) -> ArtifactStore:
        if self.uri.startswith("s3://"):
            bucket, prefix = split_s3_uri(self.uri)
            client = S3Resource(endpoint_url=self.s3_endpoint_url).get_client()
            return S3ArtifactStore(client, bucket, prefix)
        return LocalArtifactStore(self.uri)

