"""The landing sensor against a real S3 wire protocol server (moto on loopback) and a folder."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, instance_for_test

from resources.storage import ArtifactStoreResource, LocalArtifactStore
from tests.helpers.pipeline import DATA_ONLY, ingest, local_pipeline, train
from tests.helpers.sensors import Ticker
from trending_assets.assets.ingestion import landing_files, raw_titles
from trending_assets.automation.landing import ETAG_TAG
from trending_assets.settings import LandingSensorSettings
from trending_assets.skipped_files import SKIPPED_FILES

LANDING_PREFIX = "landing"


def today(days_ago: int = 0) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%d")


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"landing-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def s3_ticker(instance, s3_client, bucket, **settings) -> Ticker:
    endpoint = s3_client.meta.endpoint_url
    resource = ArtifactStoreResource(uri=f"s3://{bucket}/{LANDING_PREFIX}",
                                     s3_endpoint_url=endpoint)
    return Ticker(instance, resource, LandingSensorSettings(layout="dated", **settings))


def put(s3_client, bucket: str, key: str, body: bytes) -> dict:
    return s3_client.put_object(Bucket=bucket, Key=f"{LANDING_PREFIX}/{key}", Body=body)


def requested(result: SensorResult) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}


def test_new_files_become_partitions_and_runs_once(instance, s3_client, bucket):
    ticker = s3_ticker(instance, s3_client, bucket)
    etags = {}
    for name in ("a.csv", "b.csv"):
        key = f"{today()}/{name}"
        etags[key] = put(s3_client, bucket, key, f"content of {name}".encode())["ETag"].strip('"')
    put(s3_client, bucket, f"{today()}/.upload.tmp", b"partial")  # upload leftover: ignored
    put(s3_client, bucket, f"{today(10)}/old.csv", b"outside the window")

    first = ticker.tick()
    assert requested(first) == {k: f"{k}@{etags[k]}" for k in etags}
    assert {r.tags[ETAG_TAG] for r in first.run_requests} == set(etags.values())
    assert sorted(instance.get_dynamic_partitions(landing_files.name)) == sorted(etags)

    assert ticker.tick().run_requests == []  # nothing new

    # the same content again: same ETag, no run
    put(s3_client, bucket, f"{today()}/a.csv", b"content of a.csv")
    assert ticker.tick().run_requests == []

    # new content under the same name: a new run, no new partition
    changed = put(s3_client, bucket, f"{today()}/a.csv", b"fixed content")["ETag"].strip('"')
    result = ticker.tick()
    assert requested(result) == {f"{today()}/a.csv": f"{today()}/a.csv@{changed}"}
    assert result.dynamic_partitions_requests == []
    assert len(instance.get_dynamic_partitions(landing_files.name)) == 2


def test_same_second_uploads_are_never_skipped(instance, s3_client, bucket):
    ticker = s3_ticker(instance, s3_client, bucket)
    put(s3_client, bucket, f"{today()}/first.csv", b"1")
    assert list(requested(ticker.tick())) == [f"{today()}/first.csv"]
    put(s3_client, bucket, f"{today()}/second.csv", b"2")
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{LANDING_PREFIX}/{today()}/")
    stamps = {o["Key"]: o["LastModified"] for o in listed["Contents"]}
    # LastModified has one-second resolution: a "since last modified" cursor would skip one
    # of these whenever they share a second; the key + ETag cursor cannot.
    assert all(s.microsecond == 0 for s in stamps.values())
    assert list(requested(ticker.tick())) == [f"{today()}/second.csv"]


@pytest.mark.e2e  # a thousand S3 objects: too slow for make test-fast
def test_a_thousand_objects_in_one_tick(instance, s3_client, bucket):
    # page_size 300: the tick pages through four LIST responses
    ticker = s3_ticker(instance, s3_client, bucket, page_size=300)
    keys = [f"{today()}/batch-{i:04d}.csv" for i in range(1000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: put(s3_client, bucket, k, k.encode()), keys))
    result = ticker.tick()
    assert sorted(requested(result)) == keys
    assert len({r.run_key for r in result.run_requests}) == 1000
    assert len(instance.get_dynamic_partitions(landing_files.name)) == 1000
    assert ticker.tick().run_requests == []


def test_more_than_the_tick_limit_waits_for_the_next_tick(instance, s3_client, bucket):
    ticker = s3_ticker(instance, s3_client, bucket, max_runs_per_tick=3)
    for i in range(5):
        put(s3_client, bucket, f"{today()}/f{i}.csv", str(i).encode())
    assert len(ticker.tick().run_requests) == 3
    assert sorted(requested(ticker.tick())) == [f"{today()}/f3.csv", f"{today()}/f4.csv"]
    assert ticker.tick().run_requests == []


def test_cursor_keeps_only_the_window(instance, s3_client, bucket):
    ticker = s3_ticker(instance, s3_client, bucket, lookback_days=1)
    put(s3_client, bucket, f"{today(1)}/y.csv", b"y")
    put(s3_client, bucket, f"{today()}/t.csv", b"t")
    assert len(ticker.tick().run_requests) == 2
    assert sorted(json.loads(ticker.cursor)["seen"]) == [f"{today(1)}/", f"{today()}/"]


def test_local_folder_with_the_same_sensor(instance, tmp_path: Path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "one.csv").write_text("one")
    ticker = Ticker(instance, ArtifactStoreResource(uri=str(landing)),
                    LandingSensorSettings(layout="flat"))
    assert list(requested(ticker.tick())) == ["one.csv"]
    assert ticker.tick().run_requests == []
    (landing / "two.csv").write_text("two")
    (landing / "one.csv").write_text("one, changed")
    assert sorted(requested(ticker.tick())) == ["one.csv", "two.csv"]
    assert ticker.tick().run_requests == []


def test_unreadable_cursor_relists_without_crashing(instance, s3_client, bucket):
    ticker = s3_ticker(instance, s3_client, bucket)
    put(s3_client, bucket, f"{today()}/a.csv", b"a")
    ticker.cursor = "not json"
    assert list(requested(ticker.tick())) == [f"{today()}/a.csv"]


def test_hidden_and_unsafe_names_are_said_not_ingested(instance, s3_client, bucket):
    from trending_assets.automation.landing import landing_tick

    store = ArtifactStoreResource(uri=f"s3://{bucket}/{LANDING_PREFIX}",
                                  s3_endpoint_url=s3_client.meta.endpoint_url).open()
    settings = LandingSensorSettings(layout="dated")
    for name in ("good.csv", ".hidden.csv", "../escape.csv", "/rooted.csv", "part.csv.tmp"):
        put(s3_client, bucket, f"{today()}/{name}", b"x")
    result, tick = landing_tick(instance, store, settings, None)
    assert list(requested(result)) == [f"{today()}/good.csv"]
    reasons = {key.removeprefix(f"{today()}/"): reason for key, reason in tick.skipped.items()}
    assert set(reasons) == {".hidden.csv", "../escape.csv", "/rooted.csv", "part.csv.tmp"}
    assert reasons[".hidden.csv"].startswith("not ingested: a hidden name")
    assert reasons["../escape.csv"] == ("not ingested: the name is refused (it has a '..' "
                                        "segment (a parent folder)); upload it under a plain "
                                        "name")
    assert "it has an empty or '.' segment" in reasons["/rooted.csv"]
    # said once per content, like an ingestion
    _, again = landing_tick(instance, store, settings, result.cursor)
    assert again.skipped == {} and again.new == []


def test_the_cli_lists_hidden_local_files_with_the_reason(tmp_path: Path) -> None:
    from resources.storage import LocalArtifactStore
    from trending_assets.automation.landing import landing_keys, skipped_landing_files

    landing = tmp_path / "landing"
    (landing / "sub" / ".partial").mkdir(parents=True)
    for name in ("a.csv", ".b.csv", "sub/c.csv", "sub/.partial/d.csv"):
        (landing / name).write_text("x")
    store = LocalArtifactStore(landing)
    assert landing_keys(store) == ["a.csv", "sub/c.csv"]
    skipped = skipped_landing_files(store)
    assert sorted(skipped) == [".b.csv", "sub/.partial/d.csv"]
    assert all(r.startswith("not ingested: a hidden name") for r in skipped.values())


def skipped_on_raw_titles(instance: DagsterInstance) -> dict[str, str] | None:
    """The `skipped_files` table of raw_titles' latest observation, as key -> reason."""
    records = instance.fetch_observations(raw_titles.key, limit=1).records
    if not records:
        return None
    table = records[0].asset_observation.metadata[SKIPPED_FILES]
    assert [c.name for c in table.schema.columns] == ["key", "reason"]
    return {r.data["key"]: r.data["reason"] for r in table.records}


HIDDEN = ("not ingested: a hidden name (a part starting with '.') or a .tmp name is taken "
          "for an upload in progress or an editor file; rename it to ingest it")


def test_a_tick_lists_what_it_does_not_ingest_on_raw_titles(instance, s3_client, bucket):
    ticker = s3_ticker(instance, s3_client, bucket)
    day = today()
    for name in ("a.csv", "sub/b.csv", ".c.csv", "sub/.partial/d.csv", "e.csv.tmp",
                 "../up.csv"):
        put(s3_client, bucket, f"{day}/{name}", name.encode())
    first = ticker.tick()
    assert sorted(requested(first)) == [f"{day}/a.csv", f"{day}/sub/b.csv"]  # nested: ingested
    assert skipped_on_raw_titles(instance) == {
        f"{day}/.c.csv": HIDDEN, f"{day}/sub/.partial/d.csv": HIDDEN, f"{day}/e.csv.tmp": HIDDEN,
        f"{day}/../up.csv": "not ingested: the name is refused (it has a '..' segment (a "
                            "parent folder)); upload it under a plain name"}
    assert first.skip_reason is None  # it started runs

    # Said once per content: a quiet tick records nothing new.
    quiet = ticker.tick()
    assert quiet.asset_events == [] and quiet.skip_reason is None

    # Only a new hidden upload: no run, and the tick itself says why.
    put(s3_client, bucket, f"{day}/.f.csv", b"f")
    only_hidden = ticker.tick()
    assert only_hidden.run_requests == []
    assert only_hidden.skip_reason.skip_message == (
        "no landing file to ingest; 1 not ingested (skipped_files on raw_titles lists them "
        f"all): '{day}/.f.csv' {HIDDEN}")
    assert skipped_on_raw_titles(instance) == {f"{day}/.f.csv": HIDDEN}


def test_every_local_landing_file_is_ingested_or_listed(tmp_path: Path, tiny_bert_dir: Path,
                                                        netflix) -> None:
    """Top-level, nested, hidden and temporary files in a local landing folder: the nested
    one is ingested, the others are listed with their reason by the sensor's tick and on
    training_data; no file is in neither list."""
    root, settings, defs = local_pipeline(tmp_path, tiny_bert_dir)
    landing = root / "landing"
    (landing / "sub" / ".partial").mkdir(parents=True)
    names = ["a.csv", "sub/b.csv", ".c.csv", "sub/.partial/d.csv", "e.csv.tmp"]
    for index, name in enumerate(names):
        netflix.iloc[index * 300:(index + 1) * 300].to_csv(landing / name, index=False)
    with instance_for_test() as instance:
        ticker = Ticker(instance, ArtifactStoreResource(uri=str(landing)),
                        LandingSensorSettings(layout="flat"))
        ingested = sorted(requested(ticker.tick()))
        assert ingested == ["a.csv", "sub/b.csv"]
        skipped = {".c.csv": HIDDEN, "sub/.partial/d.csv": HIDDEN, "e.csv.tmp": HIDDEN}
        assert skipped_on_raw_titles(instance) == skipped
        ingest(defs, instance, LocalArtifactStore(landing), ingested)
        result = train(settings, instance, selection=DATA_ONLY)
        meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["batches"].value == ["a.csv", "sub/b.csv"]
    listed = {r.data["key"]: r.data["reason"] for r in meta[SKIPPED_FILES].value.records}
    assert listed == skipped
    assert sorted([*meta["batches"].value, *listed]) == sorted(names)
