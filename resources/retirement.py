"""Retired landing batches: accepted files a person took out of training.

A record under <artifact root>/retired/<landing file>.json names the content (sha256) that
was retired, so a corrected upload under the same name is trained on again once it is
accepted; the landing file itself is never touched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from resources.storage import ArtifactStore

RETIRED_PREFIX = "retired/"


class RetiredBatches:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def key(name: str) -> str:
        return f"{RETIRED_PREFIX}{name}.json"

    def retire(self, name: str, content_sha256: str, reason: str, by: str) -> str:
        """Record that the accepted content `content_sha256` of `name` leaves training."""
        record = {"file": name, "content_sha256": content_sha256, "reason": reason,
                  "retired_by": by, "retired_at": datetime.now(UTC).isoformat()}
        self.store.put_bytes(self.key(name), json.dumps(record, indent=2).encode())
        return self.store.uri_of(self.key(name))

    def active(self) -> dict[str, dict[str, Any]]:
        """Landing file name -> its retirement record."""
        records = {}
        for key in self.store.list_keys(RETIRED_PREFIX):
            if key.endswith(".json"):
                record = json.loads(self.store.get_bytes(key))
                records[record["file"]] = record
        return records
