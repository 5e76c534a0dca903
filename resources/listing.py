"""Cheap listings of a landing area: key, a change tag and size per object, no content read.

On S3 the change tag is the object's ETag (it changes whenever the content does); in a
local folder it is size + modification time in nanoseconds, so a listing costs one `stat`
per file instead of hashing every file. Listings are scoped by a key prefix and paged, so a
caller that scopes by date folder pays for the objects in those folders only.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resources.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore


@dataclass(frozen=True)
class ListedObject:
    key: str  # relative to the listed area, '/'-separated
    etag: str  # changes whenever the content changes
    size: int


def is_upload_leftover(key: str) -> bool:
    """Hidden and temporary files are partial uploads or editor files, never landing data."""
    return any(part.startswith(".") for part in key.split("/")) or key.endswith(".tmp")


class ObjectLister(ABC):
    @abstractmethod
    def list(self, prefix: str = "", page_size: int = 1000,
             leftovers: bool = False) -> Iterator[ListedObject]:
        """Objects whose key starts with `prefix` (a plain string prefix, as on S3), in key
        order; upload leftovers (`is_upload_leftover`) only with `leftovers`."""


class S3ObjectLister(ObjectLister):
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def list(self, prefix: str = "", page_size: int = 1000,
             leftovers: bool = False) -> Iterator[ListedObject]:
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=root + prefix,
                                   PaginationConfig={"PageSize": page_size})
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(root):]
                if key and (leftovers or not is_upload_leftover(key)):
                    yield ListedObject(key, obj["ETag"].strip('"'), int(obj["Size"]))


class LocalObjectLister(ObjectLister):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def list(self, prefix: str = "", page_size: int = 1000,
             leftovers: bool = False) -> Iterator[ListedObject]:
        # Walk only the folder the prefix names (e.g. "2026-11-28/"), not the whole area.
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            if not leftovers:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or (is_upload_leftover(key) and not leftovers):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while we were listing
                    continue
                found.append(ListedObject(key, f"{stat.st_size}-{stat.st_mtime_ns}",
                                          stat.st_size))
        yield from sorted(found, key=lambda o: o.key)


def lister_for(store: ArtifactStore) -> ObjectLister:
    """The lister over the same area (and credentials) as `store`."""
    if isinstance(store, S3ArtifactStore):
        return S3ObjectLister(store.client, store.bucket, store.prefix)
    if isinstance(store, LocalArtifactStore):
        return LocalObjectLister(store.root)
    raise TypeError(f"no lister for a {type(store).__name__}")
