"""Which accepted landing batches training_data is built from, and in what order.

Order: a repeated title id takes the row of the batch that landed last: by the landing
file's write time (S3 LastModified, a file's mtime) recorded when it was ingested, then by
its ETag, never by its name. Batches ingested before the landing time was recorded fall
back to when their stored version was written.

Left out: a batch whose landing file is no longer in the landing area, and one retired
with `python -m trending_assets.cli retire <file>` (resources/retirement.py) while its
stored content is the one that was retired.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from resources.io_manager import StoredAssetsResource
from resources.retirement import RetiredBatches

RAW_TITLES = AssetKey("raw_titles")


class BatchNotFound(LookupError):
    """No accepted version of that landing file is stored."""


@dataclass(frozen=True)
class StoredBatch:
    """The stored (accepted) version of one landing file's partition."""

    name: str
    version: str | None  # the run that stored it
    written_at: str | None
    content_sha256: str | None
    landed_at: str | None  # when the landing file was written, as seen at ingestion
    landing_etag: str | None

    def order_key(self) -> tuple[datetime, str]:
        when = self.landed_at or self.written_at or "1970-01-01T00:00:00+00:00"
        return datetime.fromisoformat(when), self.landing_etag or ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stored_batches(instance: DagsterInstance, stored: StoredAssetsResource,
                   names: Iterable[str]) -> dict[str, StoredBatch]:
    """Each partition's stored version with what its ingestion recorded about the file."""
    batches = {}
    for name in names:
        manifest = stored.current_manifest(list(RAW_TITLES.path), name) or {}
        version = manifest.get("version")
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=RAW_TITLES, asset_partitions=[name]), limit=100).records
        metadata = next((r.asset_materialization.metadata for r in records
                         if r.run_id == version and r.asset_materialization), {})

        def value(key: str, metadata: Mapping[str, Any] = metadata) -> Any:
            return metadata[key].value if key in metadata else None

        batches[name] = StoredBatch(name, version, manifest.get("written_at"),
                                    value("content_sha256"), value("landed_at"),
                                    value("landing_etag"))
    return batches


def ingest_order(batches: Iterable[StoredBatch]) -> list[str]:
    """Oldest landing first: later batches win on repeated ids. The name only breaks a tie
    between batches with the same landing time and ETag (the same content)."""
    return [b.name for b in sorted(batches, key=lambda b: (*b.order_key(), b.name))]


def left_out(batches: Mapping[str, StoredBatch], landing_keys: Collection[str],
             retired: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Batch -> why it leaves training (removed from the landing area, or retired)."""
    why = {}
    for name, batch in batches.items():
        record = retired.get(name)
        if name not in landing_keys:
            why[name] = "removed from the landing area"
        elif record is not None and record["content_sha256"] == batch.content_sha256:
            why[name] = (f"retired by {record['retired_by']} at {record['retired_at']}: "
                         f"{record['reason']}")
    return why


def retire_batch(instance: DagsterInstance, stored: StoredAssetsResource,
                 retired: RetiredBatches, name: str, reason: str, by: str) -> str:
    """Retire the stored content of landing file `name`; the record's URI."""
    known = instance.get_dynamic_partitions("landing_files")
    batch = stored_batches(instance, stored, [name])[name] if name in known else None
    if batch is None or batch.version is None or batch.content_sha256 is None:
        accepted = [n for n, b in stored_batches(instance, stored, known).items() if b.version]
        raise BatchNotFound(
            f"{name!r} has no accepted batch to retire; accepted batches: "
            + (", ".join(sorted(accepted)) or "none"))
    return retired.retire(name, batch.content_sha256, reason, by)


def retire_command(instance: DagsterInstance, stored: StoredAssetsResource,
                   retired: RetiredBatches, name: str, reason: str, by: str) -> int:
    """`python -m trending_assets.cli retire <file>`: 0 when retired, 2 when there is no
    accepted batch of that name."""
    try:
        uri = retire_batch(instance, stored, retired, name, reason, by)
    except BatchNotFound as exc:
        print(f"cannot retire: {exc}", file=sys.stderr)
        return 2
    print(f"{name} retired (record: {uri}); training_data leaves it out from its next run "
          "(`python -m trending_assets.cli run --force`)")
    return 0
