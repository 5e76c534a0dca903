"""Fixtures of the component layer: a real S3 endpoint and the two artifact stores over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from tests.helpers.s3 import S3_PREFIX, moto_s3_client, new_bucket


@pytest.fixture(scope="module")
def s3_client() -> Iterator[object]:
    """A boto3 client talking HTTP to a moto server on loopback (not the in-process mock)."""
    with moto_s3_client() as client:
        yield client


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    client = request.getfixturevalue("s3_client")
    return S3ArtifactStore(client, new_bucket(client), S3_PREFIX)
