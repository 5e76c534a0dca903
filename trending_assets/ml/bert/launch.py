"""Data-parallel BERT training from a parent process: torchrun over the trainer CLI.

The parent writes the splits to a folder, starts `torchrun --nproc_per_node=N -m
trending_assets.ml.bert.train`, turns the workers' progress lines into `log_fn` calls and
carries their checkpoints (written to a local folder by rank 0) to the durable
`checkpoints` storage while they train, so a replacement pod resumes from there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trending_assets.ml.bert.checkpoint import (
    CheckpointStorage,
    DirectoryCheckpointStorage,
    mirror_latest,
)
from trending_assets.ml.bert.model import BertGenreModel
from trending_assets.ml.bert.params import BertParams
from trending_assets.ml.bert.train import FIT_PREFIX, PROGRESS_PREFIX
from trending_assets.ml.dataset import TitleSplits

MIRROR_SECONDS = 5.0


def param_flags(params: BertParams) -> list[str]:
    """The trainer CLI flags that reproduce `params`."""
    flags = []
    for name, value in params.model_dump().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def _mirror_until(stop: threading.Event, local: CheckpointStorage,
                  durable: CheckpointStorage) -> None:
    while not stop.wait(MIRROR_SECONDS):
        mirror_latest(local, durable)
    mirror_latest(local, durable)


def train_bert_processes(
    splits: TitleSplits, params: BertParams, processes: int, checkpoints: CheckpointStorage,
    tracker_run_id: str | None, log_fn: Callable[[dict[str, float]], None],
    echo: Callable[[str], None],
) -> tuple[BertGenreModel, dict[str, Any]]:
    """Train with `processes` torchrun workers; returns the model and its fit figures.
    Lines the workers print that are not progress go to `echo`."""
    gpus = torch.cuda.device_count()
    if gpus and processes > gpus:
        raise ValueError(f"bert.processes is {processes} but this node has {gpus} GPU(s), and "
                         f"each process needs its own: set bert.processes (and "
                         f"k8s.steps.bert_model.gpus) to at most {gpus}")
    with tempfile.TemporaryDirectory(prefix="bert-ddp-") as tmp:
        folder = Path(tmp)
        (folder / "splits").mkdir()
        splits.save(folder / "splits")
        local = DirectoryCheckpointStorage(folder / "checkpoints")
        mirror_latest(checkpoints, local)  # resume from what an earlier attempt stored
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "trending_assets.ml.bert.train",
            "--splits-dir", str(folder / "splits"), "--output-dir", str(folder / "out"),
            "--checkpoint-dir", str(folder / "checkpoints"), "--progress-lines",
            "--model-only", "--wandb-mode", "disabled", *param_flags(params),
        ]
        if tracker_run_id:
            command += ["--tracker-run-id", tracker_run_id]
        stop = threading.Event()
        mirror = threading.Thread(target=_mirror_until, args=(stop, local, checkpoints),
                                  daemon=True)
        mirror.start()
        figures: dict[str, Any] = {}
        tail: list[str] = []
        try:
            with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) as workers:
                assert workers.stdout is not None
                for line in workers.stdout:
                    line = line.rstrip("\n")
                    tail = [*tail[-200:], line]
                    if line.startswith(PROGRESS_PREFIX):
                        log_fn(json.loads(line[len(PROGRESS_PREFIX):]))
                    elif line.startswith(FIT_PREFIX):
                        figures = json.loads(line[len(FIT_PREFIX):])
                    elif line:
                        echo(line)
        finally:
            stop.set()
            mirror.join()
        if workers.returncode != 0:
            raise RuntimeError(
                f"torchrun with {processes} processes exited with {workers.returncode}; "
                "last output:\n" + "\n".join(tail))
        model = BertGenreModel.load(folder / "out" / "model")
    return model, figures
