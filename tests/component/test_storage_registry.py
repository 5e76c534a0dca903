"""Artifact stores (local folder and S3 via a real moto server), IO helpers, model registry."""

from __future__ import annotations

import json
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from resources.io_manager import (
    ArtifactIntegrityError,
    read_version,
    sha256_hex,
    write_version,
)
from resources.registry import ModelRegistry, RegistryError
from resources.storage import (
    ArtifactNotFoundError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    split_s3_uri,
)
from tests.helpers.s3 import S3_PREFIX, new_bucket, saver

# --- stores -----------------------------------------------------------------------------


def test_put_get_exists(store: ArtifactStore) -> None:
    assert not store.exists("a/b.txt")
    store.put_bytes("a/b.txt", b"first")
    assert store.exists("a/b.txt")
    assert store.get_bytes("a/b.txt") == b"first"
    store.put_bytes("a/b.txt", b"second")  # plain put replaces
    assert store.get_bytes("a/b.txt") == b"second"
    store.put_bytes("empty.bin", b"")
    assert store.exists("empty.bin")
    assert store.get_bytes("empty.bin") == b""
    assert not store.exists("a")  # a "folder" is not a key
    assert store.uri_of("a/b.txt").endswith("/a/b.txt")


def test_list_keys_sorted_and_prefix_scoped(store: ArtifactStore) -> None:
    for key in ("m/2.bin", "n/1.bin", "m/sub/3.bin", "top.txt", "m/1.bin", "mm/1.bin"):
        store.put_bytes(key, key.encode())
    assert store.list_keys() == ["m/1.bin", "m/2.bin", "m/sub/3.bin", "mm/1.bin", "n/1.bin",
                                 "top.txt"]
    assert store.list_keys("m/") == ["m/1.bin", "m/2.bin", "m/sub/3.bin"]
    assert store.list_keys("m/sub/") == ["m/sub/3.bin"]
    assert store.list_keys("missing/") == []


def test_s3_store_stays_inside_its_prefix(s3_client) -> None:
    bucket = new_bucket(s3_client)
    s3_client.put_object(Bucket=bucket, Key="other/outside.txt", Body=b"not ours")
    store = S3ArtifactStore(s3_client, bucket, f"/{S3_PREFIX}/")
    assert store.uri == f"s3://{bucket}/{S3_PREFIX}"
    store.put_bytes("x/y.txt", b"ours")
    raw = s3_client.get_object(Bucket=bucket, Key=f"{S3_PREFIX}/x/y.txt")["Body"].read()
    assert raw == b"ours"
    assert store.list_keys() == ["x/y.txt"]
    assert not store.exists("other/outside.txt")
    assert store.uri_of("x/y.txt") == f"s3://{bucket}/{S3_PREFIX}/x/y.txt"
    bare = S3ArtifactStore(s3_client, bucket)
    assert bare.list_keys() == ["other/outside.txt", f"{S3_PREFIX}/x/y.txt"]
    assert bare.uri_of("k") == f"s3://{bucket}/k"


def test_put_if_absent_never_overwrites(store: ArtifactStore) -> None:
    assert store.put_if_absent("once/key.json", b"winner") is True
    assert store.put_if_absent("once/key.json", b"loser") is False
    assert store.get_bytes("once/key.json") == b"winner"
    assert store.list_keys("once/") == ["once/key.json"]  # no temp files left behind


def test_get_missing_key_raises_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError) as info:
        store.get_bytes("nope/missing.bin")
    assert "nope/missing.bin" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_download_file_writes_the_object(store: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    store.put_bytes("weights/model.safetensors", data)
    target = tmp_path / "copy.bin"
    store.download_file("weights/model.safetensors", target)
    assert target.read_bytes() == data
    with pytest.raises(ArtifactNotFoundError, match=r"weights/missing\.bin"):
        store.download_file("weights/missing.bin", tmp_path / "missing.bin")


def test_iter_chunks_streams_the_object(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 10
    store.put_bytes("landing/titles.csv", data)
    chunks = list(store.iter_chunks("landing/titles.csv", chunk_bytes=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 560]
    assert b"".join(chunks) == data
    with pytest.raises(ArtifactNotFoundError, match=r"landing/missing\.csv"):
        next(store.iter_chunks("landing/missing.csv"))


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd"])
def test_local_store_refuses_keys_outside_root(tmp_path: Path, key: str) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    with pytest.raises(ValueError, match="outside the store root"):
        store.put_bytes(key, b"escape")
    with pytest.raises(ValueError, match="outside the store root"):
        store.put_if_absent(key, b"escape")
    with pytest.raises(ValueError, match="outside the store root"):
        store.get_bytes(key)
    with pytest.raises(ValueError, match="outside the store root"):
        store.exists(key)
    assert not (tmp_path / "x").exists()


def test_local_store_writes_files_atomically(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put_bytes("deep/er/file.bin", b"data")
    assert (tmp_path / "deep" / "er" / "file.bin").read_bytes() == b"data"
    store.put_if_absent("deep/er/other.bin", b"data")
    assert sorted(p.name for p in (tmp_path / "deep" / "er").iterdir()) == [
        "file.bin", "other.bin"]


def test_split_s3_uri() -> None:
    assert split_s3_uri("s3://bucket/some/prefix") == ("bucket", "some/prefix")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="not an s3:// URI"):
        split_s3_uri("/local/path")
    with pytest.raises(ValueError, match="names no bucket"):
        split_s3_uri("s3:///prefix")


# --- IO manager helpers -----------------------------------------------------------------

FRAME = pd.DataFrame({
    "id": ["n:1", "n:2", "n:3"], "year": [2019, 2020, 2021], "score": [0.5, 0.25, 1.0],
    "labels": ["Drama", "Comedy|Drama", ""],
})


def test_dataframe_version_roundtrip(store: ArtifactStore) -> None:
    manifest = write_version(store, "assets/titles", "run-1", FRAME)
    assert manifest["version"] == "run-1"
    assert manifest["format"] == "parquet"
    assert manifest["type"] == "DataFrame"
    assert list(manifest["files"]) == ["table.parquet"]
    stored = store.get_bytes("assets/titles/run-1/table.parquet")
    assert manifest["files"]["table.parquet"] == {"sha256": sha256_hex(stored),
                                                  "bytes": len(stored)}
    assert manifest["uri"] == store.uri_of("assets/titles/run-1")
    assert json.loads(store.get_bytes("assets/titles/current.json")) == manifest
    assert json.loads(store.get_bytes("assets/titles/run-1/manifest.json")) == manifest

    loaded, read_manifest = read_version(store, "assets/titles", pd.DataFrame)
    pd.testing.assert_frame_equal(loaded, FRAME, check_dtype=False)
    assert loaded["year"].tolist() == [2019, 2020, 2021]
    assert read_manifest == manifest


def test_dict_version_roundtrip(store: ArtifactStore) -> None:
    value = {"macro_f1": 0.61, "genres": ["Drama", "Comedy"], "nested": {"k": 3}}
    manifest = write_version(store, "assets/report/2024-01-01", "run-a", value)
    assert manifest["format"] == "json"
    assert list(manifest["files"]) == ["value.json"]
    loaded, _ = read_version(store, "assets/report/2024-01-01", dict)
    assert loaded == value
    typed, _ = read_version(store, "assets/report/2024-01-01", dict[str, object])
    assert typed == value


def test_tampered_file_fails_integrity_check(store: ArtifactStore) -> None:
    write_version(store, "assets/titles", "run-1", FRAME)
    good = store.get_bytes("assets/titles/run-1/table.parquet")
    store.put_bytes("assets/titles/run-1/table.parquet", good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ArtifactIntegrityError) as info:
        read_version(store, "assets/titles", pd.DataFrame)
    message = str(info.value)
    assert store.uri_of("assets/titles/run-1/table.parquet") in message
    assert sha256_hex(good) in message  # the recorded hash


def test_second_write_keeps_the_older_version(store: ArtifactStore) -> None:
    first = write_version(store, "assets/counts", "run-1", {"n": 1})
    old_bytes = store.get_bytes("assets/counts/run-1/value.json")
    second = write_version(store, "assets/counts", "run-2", {"n": 2})
    assert first["files"] != second["files"]
    assert store.get_bytes("assets/counts/run-1/value.json") == old_bytes
    assert json.loads(store.get_bytes("assets/counts/run-1/manifest.json")) == first
    assert store.list_keys("assets/counts/") == [
        "assets/counts/current.json",
        "assets/counts/run-1/manifest.json", "assets/counts/run-1/value.json",
        "assets/counts/run-2/manifest.json", "assets/counts/run-2/value.json",
    ]
    value, manifest = read_version(store, "assets/counts", dict)
    assert value == {"n": 2}
    assert manifest["version"] == "run-2"


def test_read_before_any_write_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError):
        read_version(store, "assets/never_written", dict)


class _Blob:
    """An artifact-style object: save(directory) / classmethod load(directory)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def save(self, directory: Path) -> None:
        (directory / "sub").mkdir()
        (directory / "sub" / "payload.bin").write_bytes(self.payload)

    @classmethod
    def load(cls, directory: Path) -> _Blob:
        return cls((directory / "sub" / "payload.bin").read_bytes())


def test_artifact_object_roundtrip_and_type_errors(store: ArtifactStore) -> None:
    manifest = write_version(store, "assets/blob", "r1", _Blob(b"\x00\x01binary"))
    assert manifest["format"] == "artifact"
    assert list(manifest["files"]) == ["sub/payload.bin"]
    loaded, _ = read_version(store, "assets/blob", _Blob)
    assert loaded.payload == b"\x00\x01binary"
    with pytest.raises(TypeError, match="cannot store a set"):
        write_version(store, "assets/bad", "r1", {1, 2})
    with pytest.raises(TypeError, match="cannot load an input declared as"):
        read_version(store, "assets/blob", int)


# --- model registry ---------------------------------------------------------------------


V1_FILES = {"weights.npz": b"weights-v1", "meta/genres.json": b'["Drama"]'}
V2_FILES = {"weights.npz": b"weights-v2", "meta/genres.json": b'["Drama"]'}


def test_register_versions_and_records(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    assert registry.versions("genre-xgb") == []
    e1 = registry.register("genre-xgb", saver(V1_FILES),
                           {"run_id": "run-1", "metrics": {"macro_f1": 0.41}}, [], "first")
    e2 = registry.register("genre-xgb", saver(V2_FILES),
                           {"run_id": "run-2", "metrics": {"macro_f1": 0.47}}, [], "second")
    assert (e1["version"], e2["version"]) == (1, 2)
    assert registry.versions("genre-xgb") == [1, 2]
    assert registry.versions("other-model") == []

    record = registry.get("genre-xgb", 2)
    assert record == e2
    assert record["model"] == "genre-xgb"
    assert record["run_id"] == "run-2"
    assert record["metrics"] == {"macro_f1": 0.47}
    assert "registered_at" in record
    assert record["files"] == {
        name: {"sha256": sha256_hex(data), "bytes": len(data)} for name, data in V2_FILES.items()
    }
    assert registry.get("genre-xgb", 1)["files"]["weights.npz"]["sha256"] == sha256_hex(
        b"weights-v1")
    # blobs are content-addressed: the shared genres.json is stored once
    blobs = store.list_keys("registry/genre-xgb/blobs/")
    assert len(blobs) == 3
    assert {b.rsplit("/", 1)[1] for b in blobs} == {
        sha256_hex(d) for d in (*V1_FILES.values(), *V2_FILES.values())}
    with pytest.raises(ArtifactNotFoundError):
        registry.get("genre-xgb", 3)


def test_download_reproduces_and_verifies(store: ArtifactStore, tmp_path: Path) -> None:
    registry = ModelRegistry(store)
    registry.register("genre-linear", saver(V1_FILES), {"run_id": "r"}, [], "first")
    target = registry.download("genre-linear", 1, tmp_path / "v1")
    assert target == tmp_path / "v1"
    got = {p.relative_to(target).as_posix(): p.read_bytes()
           for p in target.rglob("*") if p.is_file()}
    assert got == V1_FILES

    digest = sha256_hex(b"weights-v1")
    store.put_bytes(f"registry/genre-linear/blobs/{digest}", b"weights-EVIL")
    with pytest.raises(ArtifactIntegrityError, match=r"weights\.npz"):
        registry.download("genre-linear", 1, tmp_path / "again")


def test_aliases_replayed_from_events(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    registry.register("genre-bert", saver(V1_FILES), {"run_id": "r1"}, ["staging"], "first")
    assert registry.aliases("genre-bert") == {"staging": 1}
    registry.register("genre-bert", saver(V2_FILES), {"run_id": "r2"}, [], "second")
    assert registry.aliases("genre-bert") == {"staging": 1}  # registering moves nothing
    registry.set_alias("genre-bert", "staging", 2, "v2 passed its gates")
    registry.set_alias("genre-bert", "production", 1, "hold production back")
    assert registry.aliases("genre-bert") == {"staging": 2, "production": 1}

    history = registry.alias_history("genre-bert")
    staging = [e for e in history if e["alias"] == "staging"]
    assert [e["version"] for e in staging] == [1, 2]
    assert [e["reason"] for e in staging] == ["first", "v2 passed its gates"]
    assert [e["alias"] for e in history] == ["staging", "staging", "production"]
    assert all("at" in e for e in history)


def test_set_alias_to_missing_version_raises(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    with pytest.raises(RegistryError, match="no version 1"):
        registry.set_alias("genre-xgb", "staging", 1, "nothing registered yet")
    registry.register("genre-xgb", saver(V1_FILES), {}, ["staging"], "first")
    with pytest.raises(RegistryError, match="genre-xgb: no version 3 to point alias 'staging'"):
        registry.set_alias("genre-xgb", "staging", 3, "typo")
    assert registry.aliases("genre-xgb") == {"staging": 1}
    assert len(registry.alias_history("genre-xgb")) == 1


def test_concurrent_registrations_get_distinct_versions(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    workers = 8
    start = threading.Barrier(workers)

    def register(i: int) -> dict:
        start.wait(timeout=30)
        return registry.register(
            "genre-xgb", saver({"weights.npz": f"weights-{i}".encode()}), {"worker": i}, [],
            f"worker {i}",
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        entries = list(pool.map(register, range(workers)))

    assert sorted(e["version"] for e in entries) == list(range(1, workers + 1))
    assert registry.versions("genre-xgb") == list(range(1, workers + 1))
    # no registration lost: every worker's record and file is stored under its own version
    for entry in entries:
        record = registry.get("genre-xgb", entry["version"])
        assert record["worker"] == entry["worker"]
        assert record["files"]["weights.npz"]["sha256"] == sha256_hex(
            f"weights-{entry['worker']}".encode())
    assert {registry.get("genre-xgb", v)["worker"] for v in range(1, workers + 1)} == set(
        range(workers))


def test_moto_server_is_a_real_http_endpoint(s3_client) -> None:
    endpoint = s3_client.meta.endpoint_url
    assert endpoint.startswith("http://127.0.0.1:")
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert os.environ.get("AWS_ACCESS_KEY_ID") == "testing"
