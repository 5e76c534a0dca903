"""The resources that reach storage, built from the `storage:` settings in one place.

definitions.build_resources gives them to every run; the CLI builds the same ones for its
own reads and writes (quarantine records, the registry, retirements, checkpoints), so a
run and the command line never disagree on where something is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from resources.data_records import DataRecordsResource
from resources.io_manager import ArtifactIOManager, StoredAssetsResource
from resources.registry import ModelRegistryResource
from resources.storage import ArtifactStoreResource
from trending_assets.settings import Settings


@dataclass(frozen=True)
class StorageResources:
    """Each field is the resource of that key; all but `landing` on the artifact root."""

    artifacts: ArtifactStoreResource  # the root itself: BERT checkpoints, run snapshots
    io_manager: ArtifactIOManager
    stored_assets: StoredAssetsResource  # earlier stored versions, by a run's input rule
    data_records: DataRecordsResource  # quarantine, drift baselines, retired batches
    registry: ModelRegistryResource
    landing: ArtifactStoreResource

    def by_key(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def storage_resources(settings: Settings) -> StorageResources:
    artifacts = ArtifactStoreResource(
        uri=settings.storage.root, s3_endpoint_url=settings.storage.s3_endpoint_url)
    return StorageResources(
        artifacts=artifacts,
        io_manager=ArtifactIOManager(store=artifacts),
        stored_assets=StoredAssetsResource(store=artifacts),
        data_records=DataRecordsResource(store=artifacts),
        registry=ModelRegistryResource(store=artifacts),
        landing=ArtifactStoreResource(
            uri=settings.storage.landing, s3_endpoint_url=settings.storage.s3_endpoint_url),
    )
