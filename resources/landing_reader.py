"""Landing files read with a bound: what is kept in memory never passes the configured size,
whatever is stored.

A file is streamed in chunks through its sha256; its bytes are kept only while they stay
within `max_bytes`. A larger file gives its size and hash (so it is recognised when it
changes) and no content: the reader quarantines it by its size alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from resources.storage import ArtifactStore


@dataclass(frozen=True)
class BoundedRead:
    data: bytes  # the whole file, or b"" when it is larger than the bound
    size: int
    sha256: str

    @property
    def complete(self) -> bool:
        return len(self.data) == self.size


def read_bounded(store: ArtifactStore, key: str, max_bytes: int) -> BoundedRead:
    """The file under `key`, its size and sha256; its content only up to `max_bytes`."""
    digest, kept, size = hashlib.sha256(), [], 0
    for chunk in store.iter_chunks(key):
        digest.update(chunk)
        size += len(chunk)
        if size <= max_bytes:
            kept.append(chunk)
        else:
            kept.clear()
    return BoundedRead(b"".join(kept) if size <= max_bytes else b"", size, digest.hexdigest())


def stored_sha256(store: ArtifactStore, key: str) -> str:
    """sha256 of a stored file, read in chunks (never the whole file in memory)."""
    return read_bounded(store, key, 0).sha256
