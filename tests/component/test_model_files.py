"""bert.model_path on S3 (a real moto server on loopback): copied once into the cache by
content, checked before training, trained from by the bert_model asset, recorded by
registration and fetched again to reproduce a version."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, instance_for_test, materialize, mem_io_manager

from resources.model_files import (
    ModelFolderError,
    cached_model_copy,
    local_model_folder,
    missing_model_files,
)
from resources.registry import ModelRegistry
from resources.storage import ArtifactStoreResource, LocalArtifactStore, S3ArtifactStore
from resources.tracking import WandbTracker
from tests.conftest import splits_asset, title_splits, write_test_configs
from trending_assets.assets.training import bert_model
from trending_assets.definitions import build_definitions
from trending_assets.governance import reproduce_version
from trending_assets.ml.bert.model import BertGenreModel
from trending_assets.ml.manifest import folder_digest
from trending_assets.ml.reproduce import ReproductionError
from trending_assets.settings import ConfigError, SettingsResource, load_settings

BERT = "trending-now-bert"


def upload_folder(client, folder: Path, bucket: str, prefix: str) -> list[str]:
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


@pytest.fixture
def uploaded_model(s3_client, tiny_bert_dir: Path) -> tuple[str, str]:
    """(bucket, prefix) holding the tiny BERT folder."""
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    upload_folder(s3_client, tiny_bert_dir, bucket, "base/tiny-bert")
    return bucket, "base/tiny-bert"


@pytest.fixture
def gets(s3_client) -> Iterator[list[str]]:
    """Keys of every GetObject the test's S3 client sends."""
    seen: list[str] = []
    event, handler_id = "before-parameter-build.s3.GetObject", f"gets-{uuid.uuid4()}"
    s3_client.meta.events.register(event, lambda params, **_: seen.append(params["Key"]),
                                   unique_id=handler_id)
    yield seen
    s3_client.meta.events.unregister(event, unique_id=handler_id)


def test_copied_once_by_content_and_again_when_it_changes(
        s3_client, uploaded_model, gets: list[str], tiny_bert_dir: Path,
        tmp_path: Path) -> None:
    bucket, prefix = uploaded_model
    source = S3ArtifactStore(s3_client, bucket, prefix)
    first = cached_model_copy(source, tmp_path / "cache")
    expected = sorted(p.relative_to(tiny_bert_dir).as_posix()
                      for p in tiny_bert_dir.rglob("*") if p.is_file())
    assert sorted(f"{prefix}/{name}" for name in expected) == sorted(gets)
    assert folder_digest(first) == folder_digest(tiny_bert_dir)
    assert first.parent == tmp_path / "cache" / "base-models"

    gets.clear()
    assert cached_model_copy(source, tmp_path / "cache") == first
    assert gets == []  # unchanged listing: nothing read

    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/README.md", Body=b"new model card")
    second = cached_model_copy(source, tmp_path / "cache")
    assert second != first
    assert (second / "README.md").read_bytes() == b"new model card"
    assert folder_digest(first) == folder_digest(tiny_bert_dir)  # the old copy is intact
    models = tmp_path / "cache" / "base-models"
    assert sorted(p.name for p in models.iterdir()) == sorted(
        [first.name, f"{first.name}.json", second.name, f"{second.name}.json"])  # no partial
    assert json.loads((models / f"{second.name}.json").read_text()) == {
        "source": f"s3://{bucket}/{prefix}"}

    # A third upload: the copy used longest ago goes, the two used last stay.
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/README.md", Body=b"third model card")
    third = cached_model_copy(source, tmp_path / "cache")
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == sorted(
        [second.name, third.name])
    assert not (models / f"{first.name}.json").exists()
    # Using a kept copy again makes it the most recent: the next new copy removes the other.
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/README.md", Body=b"new model card")
    assert cached_model_copy(source, tmp_path / "cache") == second
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/README.md", Body=b"fourth model card")
    fourth = cached_model_copy(source, tmp_path / "cache")
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == sorted(
        [second.name, fourth.name])
    # A copy of another location is never removed by this one's.
    other = S3ArtifactStore(s3_client, bucket, "base/other")
    for path in sorted(p for p in tiny_bert_dir.iterdir() if p.is_file()):
        s3_client.put_object(Bucket=bucket, Key=f"base/other/{path.name}",
                             Body=path.read_bytes())
    other_copy = cached_model_copy(other, tmp_path / "cache")
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/README.md", Body=b"fifth model card")
    cached_model_copy(source, tmp_path / "cache")
    assert other_copy.is_dir() and len([p for p in models.iterdir() if p.is_dir()]) == 3


def test_incomplete_or_empty_prefix_is_refused_before_any_download(
        s3_client, uploaded_model, gets: list[str], tmp_path: Path) -> None:
    bucket, prefix = uploaded_model
    s3_client.delete_object(Bucket=bucket, Key=f"{prefix}/tokenizer.json")
    s3_client.delete_object(Bucket=bucket, Key=f"{prefix}/vocab.txt")
    with pytest.raises(ModelFolderError) as info:
        cached_model_copy(S3ArtifactStore(s3_client, bucket, prefix), tmp_path / "cache")
    message = str(info.value)
    assert f"s3://{bucket}/{prefix} has no tokenizer (tokenizer.json or vocab.txt)" in message
    assert "save_pretrained" in message
    assert gets == []
    assert not (tmp_path / "cache" / "base-models").exists()

    with pytest.raises(ModelFolderError, match=f"s3://{bucket}/nothing/here holds no files"):
        cached_model_copy(S3ArtifactStore(s3_client, bucket, "nothing/here"), tmp_path / "c")


def test_local_folders_are_checked_and_used_in_place(tiny_bert_dir: Path,
                                                     tmp_path: Path) -> None:
    assert local_model_folder(None, tmp_path) is None
    assert local_model_folder(str(tiny_bert_dir), tmp_path) == str(tiny_bert_dir)
    with pytest.raises(ModelFolderError, match="bert-base-uncased is not a folder"):
        local_model_folder(str(tmp_path / "bert-base-uncased"), tmp_path)
    (tmp_path / "weights-only").mkdir()
    (tmp_path / "weights-only" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelFolderError, match=r"has no config.json, tokenizer \("):
        local_model_folder(str(tmp_path / "weights-only"), tmp_path)
    assert missing_model_files(["config.json", "pytorch_model.bin", "vocab.txt"]) == []
    assert missing_model_files([]) == [
        "config.json",
        "weights (model.safetensors or model.safetensors.index.json or pytorch_model.bin or "
        "pytorch_model.bin.index.json)",
        "tokenizer (tokenizer.json or vocab.txt)"]


def test_other_schemes_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings("local", overrides={"bert": {"model_path": "hf://bert-base-uncased"}})
    assert ("key 'bert': Value error, model_path 'hf://bert-base-uncased': use a local "
            "folder or s3://bucket/prefix") in str(info.value)
    s3 = load_settings("local", overrides={"bert": {"model_path": "s3://b/models/minilm"}})
    assert s3.bert.model_path == "s3://b/models/minilm"  # not made a local path


@pytest.mark.e2e  # trains BERT: too slow for make test-fast
def test_bert_model_trains_from_an_s3_model_path(
        s3_client, uploaded_model, tiny_bert_dir: Path, tmp_path: Path,
        netflix: pd.DataFrame) -> None:
    bucket, prefix = uploaded_model
    uri = f"s3://{bucket}/{prefix}"
    root = tmp_path / "root"
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir, extra={
        "storage": {"cache": str(tmp_path / "cache"),
                    "s3_endpoint_url": s3_client.meta.endpoint_url},
        "bert": {"model_path": uri, "epochs": 1, "batch_size": 16}})
    splits = title_splits(netflix.sample(300, random_state=5), 0.1, 0.1, "s3-model-test")
    with instance_for_test() as instance:
        result = materialize([splits_asset(splits), bert_model], instance=instance, resources={
            "io_manager": mem_io_manager,
            "settings": SettingsResource(env="local", config_dir=str(config_dir)),
            "artifacts": ArtifactStoreResource(uri=str(root / "artifacts")),
            "tracker": WandbTracker(mode="offline", dir=str(root / "wandb")),
        })
    assert result.success
    model = result.output_for_node("bert_model")
    assert model.model.encoder.config.hidden_size == 32  # the uploaded tiny BERT
    metadata = result.asset_materializations_for_node("bert_model")[0].metadata
    assert metadata["params"].value["model_path"] == uri  # lineage names the S3 source
    copies = [p for p in (tmp_path / "cache" / "base-models").iterdir() if p.is_dir()]
    assert len(copies) == 1
    # What registration records: the S3 path and the hash of the files trained from, kept
    # with the model and shown on the materialization.
    trained_from = {"path": uri, "sha256": folder_digest(tiny_bert_dir)}
    assert model.base_model == trained_from
    assert metadata["base_model"].value == trained_from
    saved = tmp_path / "saved"
    model.save(saved)
    assert BertGenreModel.load(saved).base_model == trained_from


@pytest.mark.e2e  # trains and reproduces BERT: too slow for make test-fast
def test_registered_version_records_the_base_model_it_trained_from_and_reproduces(
        s3_client, uploaded_model, tiny_bert_dir: Path, tmp_path: Path,
        netflix: pd.DataFrame) -> None:
    """Trained from an S3 upload that is replaced before the version is registered: the
    manifest names the files training read; reproducing refuses the replaced upload and
    reproduces once the recorded files are back."""
    bucket, prefix = uploaded_model
    uri = f"s3://{bucket}/{prefix}"
    root = tmp_path / "root"
    (root / "landing").mkdir(parents=True)
    netflix.sample(400, random_state=1).to_csv(root / "landing" / "batch-001.csv", index=False)
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir, extra={
        "storage": {"cache": str(tmp_path / "cache"),
                    "s3_endpoint_url": s3_client.meta.endpoint_url},
        "bert": {"model_path": uri},
        # 400 random titles: more without a canonical genre than the data gate allows.
        "data": {"max_no_genre_share": 0.5}})
    settings = load_settings("local", config_dir)
    defs = build_definitions(settings)
    train = defs.resolve_job_def("train_models")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_files", ["batch-001.csv"])
        assert defs.resolve_job_def("ingest_landing_file").execute_in_process(
            instance=instance, partition_key="batch-001.csv").success
        assert train.execute_in_process(instance=instance, asset_selection=[AssetKey(a) for a in (
            "training_data", "data_splits", "tfidf_features", "reference_model",
            "reference_evaluation", "bert_model", "bert_evaluation")]).success
        # A new upload under the same prefix before the version is registered.
        config_key = f"{prefix}/config.json"
        original_config = (tiny_bert_dir / "config.json").read_bytes()
        changed_config = json.dumps({**json.loads(original_config), "note": "v2"}).encode()
        s3_client.put_object(Bucket=bucket, Key=config_key, Body=changed_config)
        assert train.execute_in_process(
            instance=instance, asset_selection=[AssetKey("registered_bert_model")]).success

    registry = ModelRegistry(LocalArtifactStore(settings.storage.root))
    manifest = json.loads(registry.document(BERT, 1, "manifest.json"))
    assert manifest["base_model"] == {"path": uri, "sha256": folder_digest(tiny_bert_dir)}

    with pytest.raises(ReproductionError) as info:
        reproduce_version(settings, BERT, 1)
    assert f"the manifest recorded {folder_digest(tiny_bert_dir)[:16]} ({uri})" in str(
        info.value)

    s3_client.put_object(Bucket=bucket, Key=config_key, Body=original_config)
    outcome = reproduce_version(settings, BERT, 1)
    assert outcome.reproduced, outcome.table()
    # The copy made for training is reused (same listing), the replaced upload has its own.
    assert len([p for p in (tmp_path / "cache" / "base-models").iterdir() if p.is_dir()]) == 2


@pytest.mark.parametrize("bad_key", ["{tmp}/escaped.txt", "../escaped.txt",
                                     "sub/../../escaped.txt"])
def test_a_key_that_would_leave_the_cache_is_refused(
        s3_client, uploaded_model, tmp_path: Path, bad_key: str) -> None:
    bucket, prefix = uploaded_model
    bad_key = bad_key.format(tmp=tmp_path)  # absolute: joined to a folder it replaces it
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{bad_key}", Body=b"outside")
    listed = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"{prefix}/{bad_key}" in listed  # the server keeps the key as written
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ModelFolderError, match=r"object key .* refused: it (starts with '/'|"
                                               r"has a '\.\.' segment)") as caught:
        cached_model_copy(S3ArtifactStore(s3_client, bucket, prefix), cache)
    assert repr(bad_key) in str(caught.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written anywhere


def test_path_inside_refuses_a_symbolic_link_out(tmp_path: Path) -> None:
    from resources.safe_keys import UnsafeKeyError, path_inside

    folder, outside = tmp_path / "folder", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "link").symlink_to(outside)
    assert path_inside(folder, "a/b.txt", "key") == (folder / "a" / "b.txt").resolve()
    with pytest.raises(UnsafeKeyError, match="resolves outside the folder"):
        path_inside(folder, "link/x.txt", "key")
    for key in ("", "/x", "a//b", "./x", "a\\..\\x"):
        with pytest.raises(UnsafeKeyError):
            path_inside(folder, key, "key")
