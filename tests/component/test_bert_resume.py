"""A trainer process killed with SIGKILL mid-epoch resumes from its last checkpoint and ends
with the same weights as an uninterrupted run with the same seed (CPU, within 1e-5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO

ROWS, BATCH, EPOCHS, EVERY = 300, 4, 2, 7
pytestmark = pytest.mark.e2e  # trainer processes killed and resumed: too slow for make test-fast

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}


def trainer(data: Path, model: Path, out: Path, checkpoints: Path | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "trending_assets.ml.bert.train", "--data", str(data),
               "--output-dir", str(out), "--model-path", str(model), "--model-only",
               "--wandb-mode", "disabled", "--progress-lines", "--epochs", str(EPOCHS),
               "--batch-size", str(BATCH), "--learning-rate", "1e-3", "--max-length", "32",
               "--seed", "7"]
    if checkpoints is not None:
        command += ["--checkpoint-dir", str(checkpoints), "--checkpoint-every-steps", str(EVERY)]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def weights(out: Path) -> dict[str, torch.Tensor]:
    folder = out / "model"
    return {**load_file(str(folder / "model.safetensors")),
            **load_file(str(folder / "classifier_head.safetensors"))}


def fit_figures(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("fit: "))[5:])


def first_complete_checkpoint(folder: Path) -> bool:
    for manifest in folder.glob("slot-*/manifest.json"):
        try:
            if json.loads(manifest.read_text()).get("complete"):
                return True
        except ValueError:
            continue
    return False


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    tmp_path: Path, tiny_bert_dir: Path, netflix: pd.DataFrame
) -> None:
    data = tmp_path / "titles.csv"
    netflix.sample(ROWS, random_state=3).to_csv(data, index=False)
    checkpoints = tmp_path / "checkpoints"

    reference = trainer(data, tiny_bert_dir, tmp_path / "reference", None)
    victim = trainer(data, tiny_bert_dir, tmp_path / "victim", checkpoints)
    deadline = time.monotonic() + 240
    while not first_complete_checkpoint(checkpoints):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim" / "model").exists()  # it did not get to the end

    resumed = trainer(data, tiny_bert_dir, tmp_path / "victim", checkpoints)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    progress = [json.loads(line.split(": ", 1)[1]) for line in out.splitlines()
                if line.startswith("progress: ")]
    resumed_from = int(progress[0]["resumed_from_step"])
    fit = fit_figures(out)
    assert fit["resumed_from_step"] == resumed_from and fit["optimizer_steps"] > resumed_from

    ref_out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err[-3000:]
    steps_per_epoch = fit_figures(ref_out)["optimizer_steps"] // EPOCHS
    # Resumed from a checkpoint taken mid-epoch (every EVERY steps), not an epoch end.
    assert resumed_from % EVERY == 0 and resumed_from % steps_per_epoch != 0

    expected, actual = weights(tmp_path / "reference"), weights(tmp_path / "victim")
    assert expected.keys() == actual.keys()
    worst = max((expected[k] - actual[k]).abs().max().item() for k in expected)
    assert worst <= 1e-5, f"largest weight difference {worst}"
