"""Model card and reproducibility manifest of a registered version."""

from __future__ import annotations

import json
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pytest

from trending_assets.ml.gate import decide, gate_metrics
from trending_assets.ml.manifest import (
    build_manifest,
    environment_differences,
    folder_digest,
    installed_distributions,
    split_git_commit,
)
from trending_assets.ml.model_card import build_model_card, model_card_markdown
from trending_assets.ml.report import evaluate
from trending_assets.settings import load_settings

GENRES = ["Drama", "Comedy", "Horror"]


@pytest.fixture(scope="module")
def evaluation():
    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 2, (120, 3))
    y_test = rng.integers(0, 2, (150, 3))
    y_test[:, 2] = 0
    y_test[:5, 2] = 1  # Horror: 5 test titles only
    noisy = lambda y: np.clip(y * 0.6 + rng.random(y.shape) * 0.5, 0, 1)  # noqa: E731
    kinds = np.array(["movie"] * 100 + ["tv"] * 50)
    return evaluate("xgboost", GENRES, y_val, noisy(y_val), y_test, noisy(y_test),
                    {"kind=movie": kinds == "movie", "kind=tv": kinds == "tv"})


def card_for(evaluation, **changes):
    settings = load_settings("local")
    gate = settings.gates.xgboost
    blessing = decide("trending-now-xgboost", "xgboost",
                      gate_metrics(evaluation.overall, evaluation.slices), gate, None)
    arguments = dict(
        model="trending-now-xgboost", version=3, family="xgboost", evaluation=evaluation,
        blessing=blessing.to_dict(), gate=gate.model_dump(mode="json"),
        intended_use=settings.registry.model_card.intended_use,
        limitations=settings.registry.model_card.limitations,
        data={"data_version": "abc123", "split_rows": {"train": 800, "val": 120, "test": 150},
              "genres": GENRES, "taxonomy_file": "genres.yaml", "taxonomy_sha256": "f" * 64},
        training_config={"params": {"n_estimators": 30}},
        lineage={"git_commit": "deadbeef", "dagster_run_id": "run-1"})
    arguments.update(changes)
    return build_model_card(**arguments), blessing


def test_model_card_holds_every_section(evaluation) -> None:
    card, blessing = card_for(evaluation)
    assert card["schema"] == "trending-now/model-card/v1"
    assert (card["model"], card["version"], card["family"]) == ("trending-now-xgboost", 3,
                                                                 "xgboost")
    assert card["intended_use"].startswith("Suggest canonical genres")
    assert card["decision"]["decision"] == blessing.decision
    assert card["data"]["data_version"] == "abc123"
    assert card["metrics"]["overall"]["macro_f1"] == pytest.approx(evaluation.macro_f1)
    assert set(card["metrics"]["slices"]) == {"kind=movie", "kind=tv"}
    assert card["metrics"]["slices"]["kind=tv"]["samples"] == 50
    assert card["metrics"]["per_genre"]["Horror"]["support"] == 5
    assert card["thresholds"]["decision_per_genre"] == evaluation.thresholds
    assert card["thresholds"]["gate"]["genre_floor"] == {"min_support": 20, "min_f1": 0.15}
    assert [c["name"] for c in card["criteria"]][:2] == ["macro_f1", "micro_f1"]
    assert card["training_config"] == {"params": {"n_estimators": 30}}
    assert card["lineage"]["git_commit"] == "deadbeef"
    json.dumps(card)  # JSON-able as stored

    limitations = card["limitations"]
    assert limitations[0].startswith("Trained on the Netflix catalogue")  # from configs
    assert ("Fewer than 20 test titles, so their F1 is not reliable and not gated: Horror."
            in limitations)
    assert any(note.startswith("Not evaluated on the out-of-distribution platforms set")
               for note in limitations)
    weaker = [s for s, m in evaluation.slices.items() if m["macro_f1"] < evaluation.macro_f1]
    for name in weaker:
        assert any(note.startswith(f"Slice {name}: macro-F1") for note in limitations)


def test_model_card_markdown(evaluation) -> None:
    card, _ = card_for(evaluation)
    text = model_card_markdown(card)
    assert text.startswith("# Model card: trending-now-xgboost v3\n")
    for heading in ("## Intended use", "## Data", "## Metrics (test)", "### Per genre",
                    "## Gate", "## Known limitations", "## Training configuration",
                    "## Lineage"):
        assert f"\n{heading}\n" in text
    overall = evaluation.overall
    assert (f"| overall | 150 | {overall['macro_f1']:.3f} | {overall['micro_f1']:.3f} |"
            in text)
    horror = overall["per_genre"]["Horror"]
    assert (f"| Horror | {horror['precision']:.3f} | {horror['recall']:.3f} "
            f"| {horror['f1']:.3f} | 5 | {evaluation.thresholds['Horror']:.3f} |") in text
    assert "| macro_f1 |" in text  # the gate criteria table
    assert '"git_commit": "deadbeef"' in text

    # The decision summary quotes a person's override reason: shown as text, not an image.
    card["decision"]["summary"] = "FORCED promotion by ops (see ![x](http://e/x.png))"
    assert "(see !\\[x\\](http\\://e/x.png))\n" in model_card_markdown(card)


def test_manifest_records_code_dependencies_data_and_hardware(tmp_path: Path) -> None:
    settings = load_settings("local")
    (tmp_path / "weights.safetensors").write_bytes(b"weights")
    manifest = build_manifest(
        model="trending-now-bert", version=2, family="bert", git_commit="0123abc-dirty",
        config=settings.model_dump(mode="json"), seeds={"split_salt": "s", "model": 0},
        data={"content_hash": "abc", "splits_key": "assets/data_splits",
              "splits_version": "run-1"},
        base_model={"path": str(tmp_path), "sha256": folder_digest(tmp_path)})
    assert manifest["git"] == {"commit": "0123abc", "dirty": True}
    assert split_git_commit("0123abc") == ("0123abc", False)
    assert manifest["python"]["version"] == platform.python_version()
    deps = manifest["dependencies"]
    assert deps["dagster"] == importlib_metadata.version("dagster")
    assert deps["xgboost-cpu"] == importlib_metadata.version("xgboost-cpu")
    assert deps["torch"] == importlib_metadata.version("torch")
    assert len(deps) == len(installed_distributions()) > 50  # the full list, not a few
    assert manifest["seeds"] == {"split_salt": "s", "model": 0}
    assert manifest["config"]["xgboost"]["seed"] == 0
    assert manifest["config"]["gates"]["xgboost"]["min_macro_f1"] == 0.30
    assert manifest["hardware"]["cpu_count"] >= 1
    assert manifest["hardware"]["memory_gb"] > 0
    assert isinstance(manifest["hardware"]["gpus"], list)
    assert manifest["base_model"]["sha256"] == folder_digest(tmp_path)
    json.dumps(manifest)

    assert environment_differences(manifest) == []
    changed = json.loads(json.dumps(manifest))
    changed["dependencies"]["xgboost-cpu"] = "0.1"
    changed["python"]["version"] = "3.0.0"
    notes = environment_differences(changed)
    assert f"xgboost-cpu 0.1 recorded, {deps['xgboost-cpu']} here" in notes
    assert f"python 3.0.0 recorded, {platform.python_version()} here" in notes


def test_folder_digest_sees_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    first = folder_digest(tmp_path)
    (tmp_path / "a").write_bytes(b"2")
    assert folder_digest(tmp_path) != first
    (tmp_path / "a").write_bytes(b"1")
    assert folder_digest(tmp_path) == first
    (tmp_path / "a").rename(tmp_path / "b")
    assert folder_digest(tmp_path) != first
