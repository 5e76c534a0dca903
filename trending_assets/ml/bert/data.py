"""Token batches for transformer training: length-bucketed, dynamically padded, resumable.

Texts are tokenized once into one padded (rows, max_length) array; a batch is a slice of
it cut to the batch's own width, rounded up to a multiple of `pad_multiple` so the set of
shapes stays small (what `torch.compile` and cuDNN/cuBLAS autotuning need).

The batch order of an epoch depends only on (seed, epoch), never on a running random
state, so a resumed run rebuilds the same plan and skips the batches already trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

BUCKET_BATCHES = 50  # batches per length-sorted chunk: lengths group well, order stays random


@dataclass(frozen=True)
class TokenTable:
    """Token ids padded to `max_length` (pad id after each row's end) and true lengths."""

    ids: np.ndarray  # (rows, max_length) int64
    lengths: np.ndarray  # (rows,) int64, >= 1
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], pad_id: int) -> TokenTable:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        if len(rows) and lengths.min() < 1:
            raise ValueError("every row needs at least one token")
        width = int(lengths.max()) if len(rows) else 1
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return cls(ids, lengths, pad_id)


def padded_width(longest: int, pad_multiple: int, limit: int) -> int:
    """`longest` rounded up to a multiple of `pad_multiple`, never beyond `limit`."""
    return min(limit, -(-longest // pad_multiple) * pad_multiple)


def collate(
    table: TokenTable, rows: np.ndarray, pad_multiple: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask for `rows`, padded to the bucket width of the longest."""
    width = padded_width(int(table.lengths[rows].max()), pad_multiple, table.ids.shape[1])
    ids = torch.from_numpy(np.ascontiguousarray(table.ids[rows, :width]))
    mask = torch.from_numpy(
        (np.arange(width)[None, :] < table.lengths[rows][:, None]).astype(np.int64))
    if device.type == "cuda":  # pinned host memory lets the copy overlap the running step
        ids, mask = ids.pin_memory(), mask.pin_memory()
    return {"input_ids": ids.to(device, non_blocking=True),
            "attention_mask": mask.to(device, non_blocking=True)}


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices of every optimizer-step batch of one epoch, in training order.

    Shuffle, sort chunks of BUCKET_BATCHES batches by length, cut into batches, shuffle the
    batch order: rows in a batch have similar lengths (little padding), and the order is
    still random. The same (seed, epoch) always gives the same plan."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * BUCKET_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), chunk):
        part = perm[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def shard_rows(
    rows: np.ndarray, rank: int, world_size: int, micro_batches: int
) -> list[np.ndarray]:
    """This process's micro-batches of one step batch: every `world_size`-th row from `rank`
    (so each process gets rows of similar length), cut into `micro_batches` pieces.

    Always exactly `micro_batches` pieces, some possibly empty (a short last batch): every
    process must run the same number of backward passes for the gradient all-reduce."""
    return np.array_split(rows[rank::world_size], micro_batches)
