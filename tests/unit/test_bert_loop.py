"""BERT training loop parts: batching, checkpoints, accumulation, early stopping, CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.bert import CPU, loop_settings, table, tiny_network
from trending_assets.ml.bert.checkpoint import (
    Checkpointer,
    DirectoryCheckpointStorage,
    capture_rng,
    mirror_latest,
    restore_rng,
)
from trending_assets.ml.bert.data import (
    TokenTable,
    collate,
    epoch_batches,
    padded_width,
    shard_rows,
)
from trending_assets.ml.bert.launch import param_flags
from trending_assets.ml.bert.loop import (
    autocast,
    fit,
    mixed_precision,
)
from trending_assets.ml.bert.params import BertParams
from trending_assets.ml.config import section_params
from trending_assets.settings import load_settings


def test_epoch_plan_covers_every_row_once_and_groups_lengths() -> None:
    lengths = np.random.default_rng(1).integers(2, 64, 1000)
    plan = epoch_batches(lengths, 16, seed=3, epoch=0)
    rows = np.concatenate(plan)
    assert sorted(rows.tolist()) == list(range(1000))
    assert all(len(b) == 16 for b in plan[:-1] if len(b) != 1000 % 16)
    # Length-sorted chunks: a batch's spread is far below the whole set's.
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in plan])
    assert spread < 8 < lengths.max() - lengths.min()
    # Same (seed, epoch): same plan; another epoch: another order.
    again = epoch_batches(lengths, 16, seed=3, epoch=0)
    assert all((a == b).all() for a, b in zip(plan, again, strict=True))
    assert not (np.concatenate(epoch_batches(lengths, 16, seed=3, epoch=1)) == rows).all()


def test_collate_pads_to_bucket_width_with_mask() -> None:
    tokens = TokenTable.from_lists([[101, 5, 102], [101, 6, 7, 8, 9, 10, 11, 12, 13, 102]], 0)
    batch = collate(tokens, np.array([0]), 8, torch.device("cpu"))
    assert batch["input_ids"].tolist() == [[101, 5, 102, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
    both = collate(tokens, np.array([1, 0]), 8, torch.device("cpu"))
    assert both["input_ids"].shape == (2, 10)  # capped at the table width
    assert both["attention_mask"].sum(1).tolist() == [10, 3]
    assert padded_width(17, 8, 64) == 24 and padded_width(63, 8, 64) == 64


def test_shard_rows_splits_every_row_once() -> None:
    rows = np.arange(10)
    pieces = [shard_rows(rows, r, 2, 2) for r in (0, 1)]
    assert [len(p) for p in pieces[0]] == [3, 2] and [len(p) for p in pieces[1]] == [3, 2]
    assert sorted(np.concatenate(pieces[0] + pieces[1]).tolist()) == list(range(10))
    # A short last batch: each process still gets the same number of (maybe empty) pieces.
    assert [len(p) for p in shard_rows(np.arange(1), 1, 2, 2)] == [0, 0]


def test_gradient_accumulation_matches_one_big_batch() -> None:
    tokens, labels = table()
    results = []
    for accum in (1, 4):
        network = tiny_network()
        settings = loop_settings(epochs=2, batch_size=8, learning_rate=1e-2, seed=0,
                                 grad_accum_steps=accum)
        fit(network, tokens, labels, settings, CPU)
        results.append(network.state_dict())
    for key, value in results[0].items():
        torch.testing.assert_close(results[1][key], value, atol=1e-5, rtol=0)


def test_early_stopping_keeps_best_epoch() -> None:
    tokens, labels = table()
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    snapshots = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_macro_f1": next(scores)}

    settings = loop_settings(epochs=5, batch_size=8, learning_rate=1e-2, seed=0,
                             early_stopping_patience=2)
    logged: list[dict] = []
    result = fit(tiny_network(), tokens, labels, settings, CPU, evaluate=evaluate,
                 on_progress=logged.append)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]  # epochs 3, 4 not better
    assert {"early_stopped_after_epoch": 4.0} in logged
    for key, value in snapshots[1].items():
        assert torch.equal(result.best_state[key], value)


class FailingStorage(DirectoryCheckpointStorage):
    """Dies (like a killed process) after `allowed` more writes."""

    allowed = 10**9

    def write(self, name: str, data: bytes) -> None:
        if self.allowed == 0:
            raise KeyboardInterrupt("killed")
        self.allowed -= 1
        super().write(name, data)


def test_checkpoint_complete_only_after_manifest(tmp_path: Path) -> None:
    storage = FailingStorage(tmp_path)
    checkpoints = Checkpointer(storage, "run-a")
    assert checkpoints.latest() is None
    checkpoints.save({"a.bin": b"one"}, {"step": 1})
    assert checkpoints.latest().blobs == {"a.bin": b"one"}
    checkpoints.save({"a.bin": b"two"}, {"step": 2})
    for allowed in range(3):  # killed before, between and after the blob writes
        storage.allowed = allowed
        with pytest.raises(KeyboardInterrupt):
            checkpoints.save({"a.bin": b"three"}, {"step": 3})
        storage.allowed = 10**9
        newest = checkpoints.latest()
        assert (newest.step, newest.blobs) == (2, {"a.bin": b"two"})
    checkpoints.save({"a.bin": b"three"}, {"step": 3})
    assert checkpoints.latest().step == 3
    # A blob that no longer matches its manifest: that checkpoint is skipped.
    slot = checkpoints.latest().slot
    (tmp_path / slot / "a.bin").write_bytes(b"garbage")
    assert checkpoints.latest().blobs == {"a.bin": b"two"}
    # Another run (fingerprint) never resumes from these.
    assert Checkpointer(storage, "run-b").latest() is None


def test_mirror_copies_newest_complete_checkpoint(tmp_path: Path) -> None:
    local = DirectoryCheckpointStorage(tmp_path / "local")
    durable = DirectoryCheckpointStorage(tmp_path / "durable")
    assert mirror_latest(local, durable) is None
    writer = Checkpointer(local, "run")
    writer.save({"w": b"1"}, {"step": 5})
    writer.save({"w": b"2"}, {"step": 9})
    assert mirror_latest(local, durable) == 9
    assert Checkpointer(durable, "run").latest().blobs == {"w": b"2"}
    (tmp_path / "local" / "slot-1" / "w").write_bytes(b"half-written")
    assert mirror_latest(local, durable) == 9  # target already holds it: nothing rewritten
    assert Checkpointer(durable, "run").latest().blobs == {"w": b"2"}


def test_rng_state_round_trip() -> None:
    import random

    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(json.loads(json.dumps({**state, "torch": None}))
                | {"torch": state["torch"], "cuda": []})
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_param_flags_reproduce_params() -> None:
    from trending_assets.ml.cli import build_parser, params_from_args

    configured = section_params(BertParams, "bert")
    params = configured.model_copy(update=dict(
        model_path="/m", epochs=3, compile=True, learning_rate=3e-4, head_dropout=0.0,
        precision="fp32", batch_size=16))
    parser = build_parser("", (BertParams, "bert"))
    args = parser.parse_args(["--output-dir", "x", *param_flags(params)])
    assert params_from_args(BertParams, "bert", args) == params
    assert type(params_from_args(BertParams, "bert", args).batch_size) is int
    # No flag: the configured value, read from configs/ as the pipeline reads it.
    assert params_from_args(BertParams, "bert", parser.parse_args(
        ["--output-dir", "x"])) == configured == load_settings("local").bert


def test_precision_fp32_turns_autocast_off_everywhere() -> None:
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert mixed_precision(gpu) == torch.bfloat16
    assert mixed_precision(gpu, "fp32") is None
    assert mixed_precision(cpu) is None and mixed_precision(cpu, "fp32") is None
    assert not autocast(cpu)._enabled
    with pytest.raises(ValueError, match="precision 'fp16': use one of auto, fp32"):
        mixed_precision(gpu, "fp16")


def test_more_processes_than_gpus_is_refused_before_launch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trending_assets.ml.bert import launch as bert_launch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(bert_launch.subprocess, "Popen", None)  # nothing may start
    with pytest.raises(ValueError, match=r"bert.processes is 2 but this node has 1 GPU\(s\)"):
        bert_launch.train_bert_processes(None, section_params(BertParams, "bert"), 2, None,
                                         None, print, print)
