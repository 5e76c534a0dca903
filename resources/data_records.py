"""The data gates' records on the artifact store, as one Dagster resource: quarantined
landing batches, training_data drift baselines and retired batches (layouts in
resources/quarantine.py and resources/retirement.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, ConfigurableResource

from resources.io_manager import StoredAssetsResource
from resources.quarantine import QuarantineStore, TrainingDataBaseline
from resources.retirement import RetiredBatches
from resources.storage import ArtifactNotFoundError, ArtifactStoreResource

TRAINING_DATA = AssetKey("training_data")


class DataRecordsResource(ConfigurableResource):
    store: ArtifactStoreResource

    def quarantine(self) -> QuarantineStore:
        return QuarantineStore(self.store.open())

    def baselines(self) -> TrainingDataBaseline:
        return TrainingDataBaseline(self.store.open())

    def retired(self) -> RetiredBatches:
        return RetiredBatches(self.store.open())


@dataclass(frozen=True)
class DriftBaseline:
    """The training_data version a run's drift check compares with."""

    version: str
    label: str
    profile: dict[str, Any] | None  # its stored drift profile; None: profile the table


def drift_baseline(stored: StoredAssetsResource,
                   baselines: TrainingDataBaseline) -> DriftBaseline | None:
    """The newest accepted training_data version written before this run started, else the
    newest version stored before it (never accepted), else None.

    A version written after the run started is never chosen, whatever `accepted.json` says
    by then: the rule the run's inputs follow (resources/io_manager.pinned_record). Only
    when the instance has no stored version at all do the store's own pointers decide, as
    the IO manager then falls back to `current.json`."""
    newest = None
    for record in stored.earlier_records(TRAINING_DATA):
        if baselines.is_accepted(record.run_id):
            return DriftBaseline(record.run_id, f"{record.run_id} (last accepted)",
                                 baselines.profile(record.run_id))
        newest = newest or record.run_id
    if newest is None and not _instance_knows_training_data(stored):
        accepted = baselines.accepted()
        if accepted is not None:
            version = accepted["version"]
            return DriftBaseline(version, f"{version} (last accepted)",
                                 baselines.profile(version))
        manifest = stored.current_manifest(list(TRAINING_DATA.path))
        newest = None if manifest is None else manifest["version"]
    if newest is None:
        return None
    return DriftBaseline(newest, f"{newest} (previous materialization, never accepted)", None)


def _instance_knows_training_data(stored: StoredAssetsResource) -> bool:
    try:
        return stored.pinned_record(TRAINING_DATA) is not None
    except ArtifactNotFoundError:  # stored, but only by runs started after this one
        return True
