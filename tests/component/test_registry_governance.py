"""Registry under load (20 concurrent registrations on a moto S3 server and on disk),
conditional alias moves, verified loading, and the W&B registry links."""

from __future__ import annotations

import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from resources.io_manager import ArtifactIntegrityError, sha256_hex
from resources.registry import AliasConflictError, ModelRegistry
from resources.storage import ArtifactStore, LocalArtifactStore
from resources.tracking import TrackedRun, WandbTracker, registry_target
from tests.helpers.s3 import saver
from tests.helpers.wandb_offline import read_run
from trending_assets.governance import complete_wandb_links
from trending_assets.ml.config import section_params
from trending_assets.ml.linear import LinearGenreModel, LinearParams
from trending_assets.ml.tfidf import TfidfEncoder, TfidfParams

WORKERS = 20
MODEL = "trending-now-xgboost"

# The S3 variant makes hundreds of round trips to the moto server: e2e, not test-fast.
S3_SLOW = pytest.mark.parametrize(
    "store", ["local", pytest.param("s3", marks=pytest.mark.e2e)], indirect=True)


@S3_SLOW
def test_twenty_concurrent_registrations(store: ArtifactStore) -> None:
    """20 threads register at once, each with its own files, documents naming their own
    version, and a move of `staging`: 20 distinct versions, nothing lost or torn, and an
    alias history whose every event follows the one before it."""
    registry = ModelRegistry(store)
    start = threading.Barrier(WORKERS)

    def register(i: int) -> dict:
        weights = f"weights-{i}-".encode() * 200
        start.wait(timeout=60)
        return registry.register(
            MODEL, saver({"weights.bin": weights, "sub/genres.json": b'["Drama"]'}),
            {"worker": i}, ["staging"], f"worker {i}",
            documents=lambda version: {"card.md": f"# v{version} by worker {i}".encode()})

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        entries = list(pool.map(register, range(WORKERS)))

    versions = sorted(e["version"] for e in entries)
    assert versions == list(range(1, WORKERS + 1))
    assert registry.versions(MODEL) == versions
    for entry in entries:
        version, worker = entry["version"], entry["worker"]
        stored = registry.get(MODEL, version)
        assert stored == json.loads(json.dumps(entry, default=str))  # whole, not torn
        weights = f"weights-{worker}-".encode() * 200
        assert stored["files"]["weights.bin"] == {"sha256": sha256_hex(weights),
                                                  "bytes": len(weights)}
        assert registry.document(MODEL, version, "card.md") == (
            f"# v{version} by worker {worker}".encode())
    # the shared file is stored once; every worker's weights are there
    blobs = store.list_keys(f"registry/{MODEL}/blobs/")
    assert len({k for k in blobs}) == len(set(blobs))
    for worker in range(WORKERS):
        weights = f"weights-{worker}-".encode() * 200
        assert store.get_bytes(f"registry/{MODEL}/blobs/{sha256_hex(weights)}") == weights

    history = registry.alias_history(MODEL)
    assert [e["sequence"] for e in history] == list(range(1, WORKERS + 1))
    assert sorted(e["version"] for e in history) == versions  # one move per registration
    assert history[0]["previous"] is None
    for before, after in itertools.pairwise(history):
        assert after["previous"] == before["version"]  # no move was based on a stale read
    assert registry.aliases(MODEL) == {"staging": history[-1]["version"]}


def test_conditional_promotion_has_one_winner(store: ArtifactStore) -> None:
    """Challengers judged against the same champion race for `production`: one moves it,
    the others are told who holds it now."""
    registry = ModelRegistry(store)
    registry.register(MODEL, saver({"w": b"champion"}), {}, ["production"], "first")
    challengers = [registry.register(MODEL, saver({"w": f"c{i}".encode()}), {}, [],
                                     "candidate")["version"] for i in range(6)]
    start = threading.Barrier(len(challengers))

    def promote(version: int) -> str:
        start.wait(timeout=60)
        try:
            registry.move_alias(MODEL, "production", version, "better than v1", expected=1,
                                conditional=True)
            return "moved"
        except AliasConflictError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=len(challengers)) as pool:
        outcomes = list(pool.map(promote, challengers))
    assert outcomes.count("moved") == 1
    winner = challengers[outcomes.index("moved")]
    assert registry.champion(MODEL) == winner
    for message in (o for o in outcomes if o != "moved"):
        assert f"alias 'production' points at v{winner}, not v1" in message
    assert [e["version"] for e in registry.alias_history(MODEL)] == [1, winner]
    # expecting "unset" fails once a champion exists
    with pytest.raises(AliasConflictError, match="points at v"):
        registry.move_alias(MODEL, "production", 2, "first", expected=None, conditional=True)


@pytest.fixture(scope="module")
def linear_model() -> LinearGenreModel:
    texts = [f"a {w} story about {w}" for w in ("love", "war", "crime", "space")] * 10
    y = np.array([[1, 0], [0, 1], [0, 1], [1, 0]] * 10, dtype=np.int8)
    encoder = TfidfEncoder.fit(texts, section_params(TfidfParams, "tfidf", min_df=1))
    return LinearGenreModel.fit(encoder, ["Romance", "Action"], sp.csr_matrix(
        encoder.transform(texts)), y, section_params(LinearParams, "reference"))


def test_load_verifies_every_artifact(tmp_path: Path, linear_model: LinearGenreModel) -> None:
    registry = ModelRegistry(LocalArtifactStore(tmp_path))
    entry = registry.register(MODEL, linear_model.save, {}, [], "first")
    loaded = registry.load(MODEL, entry["version"], LinearGenreModel)
    np.testing.assert_array_equal(loaded.coef, linear_model.coef)

    info = entry["files"]["linear_weights.npz"]
    blob = tmp_path / "registry" / MODEL / "blobs" / info["sha256"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as error:
        registry.load(MODEL, entry["version"], LinearGenreModel)
    message = str(error.value)
    assert f"{MODEL} v1: linear_weights.npz fails its sha256 check" in message
    assert f"the version record says {info['sha256']}" in message
    assert "Refusing to use it" in message


class _FakeArtifact:
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def link(self, target_path: str, aliases=None) -> None:
        self.calls.append(("link", self.name, target_path, list(aliases)))


class _FakeApi:
    """Stands in for wandb.Api() (W&B cloud cannot be reached here); records the calls."""

    default_entity = "trending-team"

    def __init__(self) -> None:
        self.calls: list = []

    def artifact(self, name: str, type: str | None = None) -> _FakeArtifact:
        self.calls.append(("artifact", name, type))
        return _FakeArtifact(name, self.calls)


def test_offline_registration_is_pending_and_completed_after_sync(tmp_path: Path) -> None:
    registry = ModelRegistry(LocalArtifactStore(tmp_path / "artifacts"))
    tracker = WandbTracker(mode="offline", project="trending-now", dir=str(tmp_path / "wandb"))
    target = registry_target("model", MODEL)
    for version, aliases in ((1, ["staging", "production"]), (2, []), (3, ["staging"])):
        registry.register(MODEL, saver({"w": f"v{version}".encode()}), {}, aliases, "test")
        files = tmp_path / f"v{version}"
        registry.download(MODEL, version, files)
        with tracker.start_run(name=f"register-v{version}", job_type="register",
                               config={}) as run:
            link = run.register_model_version(files, MODEL, version, target, aliases,
                                              metadata={"registry_version": version})
        assert link == {"artifact": f"{MODEL}:registry-v{version:04d}", "target": target,
                        "aliases": aliases, "run": run.path, "project": "trending-now",
                        "status": "pending"}
        assert registry.record_wandb_link(MODEL, version, link)
        assert not registry.record_wandb_link(MODEL, version, link)  # recorded once
        assert read_run(Path(run.folder))["artifacts"] == [MODEL]  # logged offline

    # production moved to v3 after v1 was registered: the links follow the registry now
    registry.set_alias(MODEL, "production", 3, "promoted later")
    api = _FakeApi()
    linked = complete_wandb_links(registry, api, log=lambda _: None)
    assert api.calls == [
        ("artifact", f"trending-team/trending-now/{MODEL}:registry-v0001", "model"),
        ("link", f"trending-team/trending-now/{MODEL}:registry-v0001", target, []),
        ("artifact", f"trending-team/trending-now/{MODEL}:registry-v0002", "model"),
        ("link", f"trending-team/trending-now/{MODEL}:registry-v0002", target, []),
        ("artifact", f"trending-team/trending-now/{MODEL}:registry-v0003", "model"),
        ("link", f"trending-team/trending-now/{MODEL}:registry-v0003", target,
         ["production", "staging"]),
    ]
    assert [link["status"] for link in linked] == ["linked"] * 3
    assert {v: link["status"] for v, link in registry.wandb_links(MODEL).items()} == {
        1: "linked", 2: "linked", 3: "linked"}
    # nothing pending any more: a second pass calls nothing
    again = _FakeApi()
    assert complete_wandb_links(registry, again, entity="other", log=lambda _: None) == []
    assert again.calls == []


class _FakeOnlineRun:
    """A wandb run in online mode, recording what would be sent to W&B."""

    offline = False
    entity, project, id = "trending-team", "trending-now", "abc123"

    def __init__(self) -> None:
        self.calls: list = []

    def log_artifact(self, artifact, aliases=None):
        self.calls.append(("log_artifact", artifact.name, artifact.type, list(aliases)))
        return artifact

    def link_artifact(self, artifact, target_path, aliases=None):
        self.calls.append(("link_artifact", artifact.name, target_path, list(aliases)))


def test_online_registration_links_with_aliases(tmp_path: Path) -> None:
    (tmp_path / "booster.ubj").write_bytes(b"{}")
    fake = _FakeOnlineRun()
    target = registry_target("model", MODEL)
    link = TrackedRun(fake).register_model_version(
        tmp_path, MODEL, 7, target, ["staging", "production"], metadata={"k": 1})
    assert fake.calls == [
        ("log_artifact", MODEL, "model", ["registry-v0007"]),
        ("link_artifact", MODEL, "wandb-registry-model/trending-now-xgboost",
         ["staging", "production"]),
    ]
    assert link["status"] == "linked"
    assert link["entity"] == "trending-team"
    assert link["run"] == "trending-team/trending-now/abc123"
