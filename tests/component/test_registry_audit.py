"""Registry integrity: reused blobs are checked, a version's decision and its alias moves
are one write (killed at every write point, on disk and on a moto S3 server), and
`registry verify` / `registry repair` find and fix what a killed write or a flipped byte
leaves behind."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from resources.io_manager import ArtifactIntegrityError, sha256_hex
from resources.registry import ModelRegistry
from resources.registry_audit import audit, registry_command, repair
from resources.storage import ArtifactNotFoundError, ArtifactStore, LocalArtifactStore
from tests.conftest import write_test_configs
from tests.helpers.s3 import saver
from trending_assets import cli

BOOSTER = b"booster-bytes-" * 64
GENRES = b'["Drama", "Comedy"]'
NOW = timedelta(0)  # grace period 0: every leftover counts at once

# The S3 variant makes hundreds of round trips to the moto server: e2e, not test-fast.
S3_SLOW = pytest.mark.parametrize(
    "store", ["local", pytest.param("s3", marks=pytest.mark.e2e)], indirect=True)


class Killed(RuntimeError):
    """The process 'died' just before a write."""


class KillingStore(ArtifactStore):
    """`inner`, killed just before its `kill_at`-th write (0: never); counts writes."""

    def __init__(self, inner: ArtifactStore, kill_at: int = 0) -> None:
        self.inner, self.kill_at, self.writes = inner, kill_at, 0
        self.uri = inner.uri

    def _write(self) -> None:
        self.writes += 1
        if self.writes == self.kill_at:
            raise Killed(f"killed before write {self.writes}")

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write()
        self.inner.put_bytes(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._write()
        return self.inner.put_if_absent(key, data)

    def delete(self, key: str) -> None:
        self._write()
        self.inner.delete(key)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.inner.list_keys(prefix)

    def modified_at(self, key: str) -> datetime:
        return self.inner.modified_at(key)


def _register(registry: ModelRegistry, model: str, files: dict[str, bytes], aliases: list[str],
              champion: int | None = None) -> dict:
    """A registration as governance makes it: conditional on the champion, which is
    verified, with a document naming the version."""
    return registry.register(
        model, saver(files), {"run_id": "r"}, aliases, "passed its gates",
        documents=lambda v: {"model_card.md": f"# {model} v{v}".encode()},
        expected={"production": champion}, verify=() if champion is None else (champion,))


def assert_records_agree_with_aliases(registry: ModelRegistry, model: str) -> None:
    """What any reader sees: every alias a version's decision moved and nothing moved later
    points at that version, and every alias points at a visible version."""
    versions = registry.versions(model)
    aliases = registry.aliases(model)
    history = registry.alias_history(model)
    for version in versions:
        decision = registry.get(model, version)["decision"]
        for alias in decision["aliases"]:
            if not [e for e in history
                    if e["alias"] == alias and e["sequence"] > decision["sequence"]]:
                assert aliases[alias] == version, (alias, version, aliases)
    assert set(aliases.values()) <= set(versions)


def _flip_byte(store: ArtifactStore, key: str) -> None:
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))


# --- blobs ----------------------------------------------------------------------------


def test_flipped_byte_is_reported_then_replaced_by_identical_retrain(
        store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    model = "trending-now-xgboost"
    _register(registry, model, {"booster.ubj": BOOSTER, "genres.json": GENRES},
              ["production", "staging"])
    blob = registry.blob_key(model, sha256_hex(BOOSTER))
    _flip_byte(store, blob)

    lines: list[str] = []
    assert registry_command(ModelRegistry(store), "verify", NOW, lines.append) == 1
    damage = [line for line in lines if line.startswith("PROBLEM")]
    assert len(damage) == 3  # the file, and production and staging held by a damaged version
    assert "v1: booster.ubj fails its sha256 check" in damage[0]
    assert "alias 'production' points at v1, whose files fail verification" in "\n".join(
        lines)
    with pytest.raises(ArtifactIntegrityError, match=r"booster\.ubj"):
        registry.download(model, 1, Path("/nonexistent-never-written"))

    # The retrain gives identical bytes: the blob is replaced, not trusted.
    entry = _register(registry, model, {"booster.ubj": BOOSTER, "genres.json": GENRES},
                      ["production", "staging"], champion=1)
    assert entry["version"] == 2
    assert entry["replaced_blobs"] == ["booster.ubj"]
    assert store.get_bytes(blob) == BOOSTER
    assert registry.aliases(model) == {"production": 2, "staging": 2}
    for version in (1, 2):  # production, and the old champion, load again
        assert registry.check_files(model, version, registry.get(model, version)) is None
    lines.clear()
    assert registry_command(ModelRegistry(store), "verify", NOW, lines.append) == 0
    assert lines[-1] == "no problems"


def test_damaged_champion_stops_registration_and_repair_relinks(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    model = "trending-now-bert"
    _register(registry, model, {"weights": b"v1-weights"}, ["production"])
    _register(registry, model, {"weights": b"v2-weights"}, ["production"], champion=1)
    _flip_byte(store, registry.blob_key(model, sha256_hex(b"v2-weights")))

    # A different candidate cannot heal v2: nothing is committed, the file is named.
    with pytest.raises(ArtifactIntegrityError, match=r"trending-now-bert v2: weights fails"):
        _register(registry, model, {"weights": b"v3-weights"}, ["production"], champion=2)
    assert registry.versions(model) == [1, 2]
    assert registry.aliases(model) == {"production": 2}

    done = repair(ModelRegistry(store), NOW)
    assert done.fixed == [f"{model}: alias 'production' moved from v2 (damaged) back to v1",
                          *[f"{model}: deleted orphan blob {registry.blob_key(model, d)}"
                            for d in sorted([sha256_hex(b"v3-weights")])]]
    assert registry.champion(model) == 1
    assert registry.load(model, 1, _Files).data == {"weights": b"v1-weights"}
    # v2's file stays damaged: repair says so, and verify keeps failing on it
    assert [f.kind for f in done.after.findings] == ["damaged_file"]
    assert "weights fails its sha256 check" in done.after.findings[0].detail
    assert not done.after.findings[0].fixable


class _Files:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    @classmethod
    def load(cls, folder: Path) -> _Files:
        return cls({p.relative_to(folder).as_posix(): p.read_bytes()
                    for p in folder.rglob("*") if p.is_file()})


# --- killed writes --------------------------------------------------------------------


@S3_SLOW
def test_killed_at_every_write_point_never_contradicts(store: ArtifactStore) -> None:
    v2_files = {"booster.ubj": b"v2-booster", "genres.json": GENRES}  # genres.json reused
    counting = KillingStore(store)
    _register(ModelRegistry(store), "count", {"booster.ubj": BOOSTER, "genres.json": GENRES},
              ["production", "staging"])
    _register(ModelRegistry(counting), "count", v2_files, ["production", "staging"], 1)
    total = counting.writes
    assert total == 5  # 2 files, 1 document, the record, the commit event

    for kill_at in range(1, total + 1):
        model = f"killed-at-{kill_at}"
        _register(ModelRegistry(store), model, {"booster.ubj": BOOSTER, "genres.json": GENRES},
                  ["production", "staging"])
        v1_blobs = set(store.list_keys(f"registry/{model}/blobs/"))
        with pytest.raises(Killed):
            _register(ModelRegistry(KillingStore(store, kill_at)), model, v2_files,
                      ["production", "staging"], champion=1)

        reader = ModelRegistry(store)
        assert reader.versions(model) == [1], kill_at
        assert reader.aliases(model) == {"production": 1, "staging": 1}
        assert reader.get(model, 1)["decision"]["aliases"] == ["production", "staging"]
        assert_records_agree_with_aliases(reader, model)
        if kill_at == total:  # the record was written: it is not a version until committed
            with pytest.raises(ArtifactNotFoundError, match="never committed"):
                reader.get(model, 2)

        # Within the grace period the leftovers may be a write in flight: left alone.
        patient = audit(reader, timedelta(hours=1))
        assert patient.ok, patient.findings
        found = audit(reader, NOW)
        kinds = sorted(f.kind for f in found.findings if f.model == model)
        leftover_blobs = len(set(store.list_keys(f"registry/{model}/blobs/")) - v1_blobs)
        if kill_at == total:
            assert kinds == ["uncommitted"]
        else:
            assert kinds == ["orphan_blob"] * leftover_blobs
            assert leftover_blobs == {1: 0, 2: 1, 3: 1, 4: 2}[kill_at]

        repair(ModelRegistry(store), NOW)
        after = ModelRegistry(store)
        assert audit(after, NOW).ok
        assert_records_agree_with_aliases(after, model)
        if kill_at == total:  # repair completed the interrupted registration
            assert after.versions(model) == [1, 2]
            assert after.aliases(model) == {"production": 2, "staging": 2}
        else:
            assert after.versions(model) == [1]
            assert set(store.list_keys(f"registry/{model}/blobs/")) == v1_blobs
        # and the next registration works on top of whatever was left
        next_version = _register(after, model, {"booster.ubj": b"v3"}, ["production"],
                                 champion=after.champion(model))["version"]
        assert after.champion(model) == next_version
        assert_records_agree_with_aliases(after, model)


def test_conflicting_commit_moves_no_alias(store: ArtifactStore) -> None:
    registry = ModelRegistry(store)
    _register(registry, "m", {"w": b"1"}, ["production", "staging"])
    _register(registry, "m", {"w": b"2"}, ["production", "staging"], champion=1)
    from resources.registry import AliasConflictError

    with pytest.raises(AliasConflictError, match="points at v2, not v1"):
        _register(registry, "m", {"w": b"3"}, ["production", "staging"], champion=1)
    assert registry.versions("m") == [1, 2, 3]
    decision = registry.get("m", 3)["decision"]
    assert decision["aliases"] == [] and "points at v2, not v1" in decision["conflict"]
    assert registry.aliases("m") == {"production": 2, "staging": 2}
    assert_records_agree_with_aliases(registry, "m")


def test_cli_registry_verify_and_repair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = write_test_configs(tmp_path / "configs", tmp_path, tmp_path,
                                {"registry": {"orphan_grace_seconds": 0}})
    root = tmp_path / "artifacts"
    monkeypatch.setenv("TRENDING_CONFIG_DIR", str(config))
    monkeypatch.setenv("APP_ENV", "local")
    registry = ModelRegistry(LocalArtifactStore(root))
    _register(registry, "trending-now-xgboost", {"booster.ubj": BOOSTER}, ["production"])
    with pytest.raises(Killed):
        _register(ModelRegistry(KillingStore(registry.store, kill_at=2)), "trending-now-xgboost",
                  {"booster.ubj": b"other"}, ["production"], champion=1)

    assert cli.main(["registry", "verify"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM trending-now-xgboost: blob registry/trending-now-xgboost/blobs/" in out
    assert out.rstrip().endswith("1 problem(s)")
    assert cli.main(["registry", "repair"]) == 0
    out = capsys.readouterr().out
    assert f"fixed: trending-now-xgboost: deleted orphan blob registry/trending-now-xgboost/" \
           f"blobs/{sha256_hex(b'other')}" in out
    assert cli.main(["registry", "verify"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no problems")


@S3_SLOW
def test_repair_killed_at_every_write_point_is_finished_by_the_next(
        store: ArtifactStore) -> None:
    """A registration killed before its commit (v3), then v2 (production) damaged: repair
    commits v3 (production moves to it: its decision assumed v2), deletes nothing v3 needs,
    and moves staging off the damaged v2. Killed at each of its writes, the next repair
    finishes the job and readers never see a contradiction."""

    def damaged_state(model: str) -> None:
        registry = ModelRegistry(store)
        _register(registry, model, {"w": b"v1-weights"}, ["production", "staging"])
        _register(registry, model, {"w": b"v2-weights"}, ["production", "staging"], 1)
        with pytest.raises(Killed):  # killed before the commit event (write 4)
            _register(ModelRegistry(KillingStore(store, 4)), model, {"w": b"v3-weights"},
                      ["production"], champion=2)
        with pytest.raises(Killed):  # and one that only left an orphan blob
            _register(ModelRegistry(KillingStore(store, 2)), model, {"w": b"v4-weights"},
                      ["production"], champion=2)
        _flip_byte(store, registry.blob_key(model, sha256_hex(b"v2-weights")))

    counting = KillingStore(store)
    damaged_state("count")
    done = repair(ModelRegistry(counting), NOW)
    orphan = ModelRegistry(store).blob_key("count", sha256_hex(b"v4-weights"))
    assert done.fixed == ["count v3: committed, moved production",
                          "count: alias 'staging' moved from v2 (damaged) back to v1",
                          f"count: deleted orphan blob {orphan}"]
    total = counting.writes
    assert total == 3

    for kill_at in range(1, total + 1):
        model = f"repair-killed-at-{kill_at}"
        damaged_state(model)
        with pytest.raises(Killed):
            repair(ModelRegistry(KillingStore(store, kill_at)), NOW)
        assert_records_agree_with_aliases(ModelRegistry(store), model)
        finished = repair(ModelRegistry(store), NOW)
        reader = ModelRegistry(store)
        assert_records_agree_with_aliases(reader, model)
        assert reader.aliases(model) == {"production": 3, "staging": 1}
        assert [f.kind for f in finished.after.findings if f.model == model] == [
            "damaged_file"]  # v2's file itself: only a backup or an identical file restores it
