"""Landing objects that are never ingested, and why, listed where an operator looks.

A hidden or temporary name is taken for an upload in progress, and a name that could lead
outside its folder is refused; neither becomes a raw_titles partition, so no run, check or
quarantine record would ever mention it. They are listed instead as a `skipped_files`
table (key, reason): on an observation of raw_titles each time the landing sensor first
sees one, and on every training_data materialization (all such objects in the area).
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetKey, AssetObservation, MetadataValue, TableColumn, TableRecord, TableSchema

from resources.listing import is_upload_leftover, lister_for
from resources.safe_keys import unsafe_key_reason
from resources.storage import ArtifactStore

SKIPPED_FILES = "skipped_files"
SKIPPED_SCHEMA = TableSchema(columns=[
    TableColumn("key", "string", description="the object's key in the landing area"),
    TableColumn("reason", "string", description="why it is not ingested, and what to do"),
])


def not_ingested_reason(key: str) -> str | None:
    """Why a listed landing object is not ingested, or None when it is."""
    unsafe = unsafe_key_reason(key)
    if unsafe is not None:
        return f"not ingested: the name is refused ({unsafe}); upload it under a plain name"
    if is_upload_leftover(key):
        return ("not ingested: a hidden name (a part starting with '.') or a .tmp name is "
                "taken for an upload in progress or an editor file; rename it to ingest it")
    return None


def skipped_landing_files(store: ArtifactStore) -> dict[str, str]:
    """Objects in the landing area that are not ingested -> why (so none goes unmentioned)."""
    return {o.key: reason for o in lister_for(store).list(leftovers=True)
            if (reason := not_ingested_reason(o.key)) is not None}


def skipped_files_table(skipped: Mapping[str, str]) -> MetadataValue:
    """The `skipped_files` metadata value: one row per object, in key order. A table, not
    markdown: the UI shows its cells as text whatever the key holds."""
    return MetadataValue.table(
        [TableRecord({"key": key, "reason": skipped[key]}) for key in sorted(skipped)],
        schema=SKIPPED_SCHEMA)


def skipped_files_observation(asset_key: AssetKey,
                              skipped: Mapping[str, str]) -> AssetObservation:
    """An observation of `asset_key` listing `skipped` (shown on the asset's page)."""
    return AssetObservation(
        asset_key=asset_key,
        description=f"{len(skipped)} landing object(s) not ingested: see {SKIPPED_FILES}",
        metadata={SKIPPED_FILES: skipped_files_table(skipped)})
