"""The transformer training loop: fast on one GPU, data parallel under torchrun, resumable.

What makes it fast: length-bucketed batches with dynamic padding (bert.data), bf16
autocast on CUDA (fp32 on CPU, where bf16 is slower and changes results), fused AdamW,
no host synchronisation inside a step (losses are summed on the device and read only when
logged), optional `torch.compile` over a fixed set of padded widths, each warmed up before
training starts.

Data parallel: `batch_size` is the optimizer-step batch over all processes. Each process
takes every world_size-th row of a step batch and splits it into `grad_accum_steps`
micro-batches; the loss is a sum scaled by the step's global row count, so the all-reduced
gradient equals the single-process one whatever the number of processes (up to
floating-point summation order, and dropout masks, which each process draws from its own
seed, `seed + rank`). One process per GPU. Only rank 0 evaluates, logs and writes
checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from transformers import get_linear_schedule_with_warmup

from trending_assets.ml.bert.checkpoint import (
    Checkpointer,
    capture_rng,
    restore_rng,
    tensors_from_bytes,
    tensors_to_bytes,
)
from trending_assets.ml.bert.data import TokenTable, collate, epoch_batches, shard_rows
from trending_assets.ml.progress import ProgressReporter

if TYPE_CHECKING:  # pydantic stays out of the bare GPU benchmark image
    from trending_assets.ml.bert.params import LoopSettings

MONITOR = "val_macro_f1"


@dataclass(frozen=True)
class Workers:
    """This process's place among the data-parallel workers."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def start_workers() -> Workers:
    """Join the process group when started by torchrun (NCCL on GPU, gloo on CPU)."""
    if not dist.is_torchelastic_launched():
        return Workers(0, 1, default_device())
    device = default_device()
    if device.type == "cuda":
        local_rank, gpus = dist.get_node_local_rank(), torch.cuda.device_count()
        if local_rank >= gpus:  # NCCL cannot share one GPU between two ranks
            raise RuntimeError(f"worker {local_rank} has no GPU of its own: this node has "
                               f"{gpus}; start at most {gpus} processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":  # device_id binds NCCL to this GPU now, not at first use
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Workers(dist.get_rank(), dist.get_world_size(), device)


def stop_workers() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


PRECISIONS = ("auto", "fp32")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")


def mixed_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype: "auto" is bf16 on CUDA and none (fp32) on CPU, where bf16 is
    slower and changes results; "fp32" is none everywhere (to rule bf16 out when chasing a
    numerical problem)."""
    check_precision(precision)
    return torch.bfloat16 if device.type == "cuda" and precision == "auto" else None


def autocast(device: torch.device, precision: str = "auto") -> torch.autocast:
    dtype = mixed_precision(device, precision)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)


def build_optimizer(model: torch.nn.Module, settings: LoopSettings) -> torch.optim.AdamW:
    """AdamW; matrices (linear weights, embeddings) decay, vectors (biases, norms) do not.

    Fused (one kernel over all parameters): on CUDA, and on CPU too, where it measured 6x
    faster than the default loop for MiniLM (13 vs 75 ms a step, 2 cores)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)


@dataclass
class FitResult:
    """What training did: per-epoch history, the best weights (by val macro-F1), speed."""

    history: list[dict[str, float]]
    best_state: dict[str, torch.Tensor] | None
    steps: int
    resumed_from_step: int | None
    samples_per_s: float
    processes: int
    peak_gpu_memory_mb: float | None = None
    gpu_utilization_percent: float | None = None
    tracker_run_id: str | None = None

    def summary(self) -> dict[str, Any]:
        """Speed and GPU figures, JSON-able (None where they do not apply)."""
        return {
            "train_samples_per_s": round(self.samples_per_s, 2),
            "optimizer_steps": self.steps,
            "resumed_from_step": self.resumed_from_step,
            "processes": self.processes,
            "peak_gpu_memory_mb": self.peak_gpu_memory_mb,
            "gpu_utilization_percent": self.gpu_utilization_percent,
            # The tracking run the training started in (an earlier attempt's, if resumed).
            "started_in_tracker_run": self.tracker_run_id,
        }


@dataclass
class _Progress:
    """Counters saved in checkpoints so a resumed run continues exactly where it stopped."""

    step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    next_batch: int = 0  # position in that epoch's batch plan
    epoch_loss_sum: float = 0.0
    epoch_rows: int = 0
    best_score: float = -1.0
    stale_epochs: int = 0
    finished: bool = False  # all epochs done, step budget spent or stopped early
    history: list[dict[str, float]] = field(default_factory=list)


def _state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _all_sum(value: torch.Tensor, workers: Workers) -> torch.Tensor:
    if workers.world_size > 1:
        dist.all_reduce(value)
    return value


def _broadcast(value: Any, workers: Workers) -> Any:
    if workers.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sample_utilization(device: torch.device, samples: list[float]) -> None:
    """Append the GPU's utilisation now (percent) when it can be read."""
    if device.type != "cuda":
        return
    with suppress(Exception):  # needs the NVML bindings, which not every image ships
        samples.append(float(torch.cuda.utilization(device)))


class _Trainer:
    def __init__(
        self, model: torch.nn.Module, train: TokenTable, targets: torch.Tensor,
        settings: LoopSettings, workers: Workers, max_steps: int = 0,
    ) -> None:
        self.model, self.train, self.settings, self.workers = model, train, settings, workers
        self.targets = targets
        self.num_labels = targets.shape[1]
        self.steps_per_epoch = math.ceil(len(train) / settings.batch_size)
        total = self.steps_per_epoch * settings.epochs
        self.total_steps = min(total, max_steps) if max_steps else total
        self.optimizer = build_optimizer(model, settings)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(settings.warmup_ratio * self.total_steps), self.total_steps)
        self.wrapped: torch.nn.Module = model
        if workers.world_size > 1:
            ids = [workers.device.index] if workers.device.type == "cuda" else None
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=ids, gradient_as_bucket_view=True)
        self.forward: Callable[..., torch.Tensor] = self.wrapped
        if settings.compile:
            self.forward = self._compiled()

    def _compiled(self) -> Callable[..., torch.Tensor]:
        """Compile once per padded width (batch size left dynamic), each warmed up now so no
        compilation lands inside training; warm-up runs touch no weights and no RNG."""
        widths = sorted({min(self.train.ids.shape[1], w) for w in range(
            self.settings.pad_multiple, self.train.ids.shape[1] + self.settings.pad_multiple,
            self.settings.pad_multiple)})
        torch._dynamo.config.cache_size_limit = max(
            torch._dynamo.config.cache_size_limit, 2 * len(widths))
        compiled = torch.compile(self.wrapped)
        devices = [self.workers.device] if self.workers.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for width in widths:
                ids = torch.full((2, width), self.train.pad_id, device=self.workers.device)
                batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                _one_graph_per_width(batch)
                with autocast(self.workers.device, self.settings.precision):
                    compiled(**batch).float().sum().backward()
        self.optimizer.zero_grad(set_to_none=True)
        return compiled

    def _micro_step(self, rows: np.ndarray, step_rows: int, sync: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its loss sum (on the device)."""
        empty = len(rows) == 0  # a short last batch: still join the all-reduce, weight 0
        use = rows if not empty else np.zeros(1, dtype=np.int64)
        inputs = collate(self.train, use, self.settings.pad_multiple, self.workers.device)
        if self.settings.compile:
            _one_graph_per_width(inputs)
        target = self.targets[use].to(self.workers.device, non_blocking=True)
        context = nullcontext() if sync or self.workers.world_size == 1 else self.wrapped.no_sync()
        with context:
            with autocast(self.workers.device, self.settings.precision):
                logits = self.forward(**inputs)
            loss_sum = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), target, reduction="sum")
            if empty:
                loss_sum = loss_sum * 0.0
            scale = self.workers.world_size / (step_rows * self.num_labels)
            (loss_sum * scale).backward()
        return loss_sum.detach()

    def step(self, batch: np.ndarray) -> torch.Tensor:
        pieces = shard_rows(batch, self.workers.rank, self.workers.world_size,
                            self.settings.grad_accum_steps)
        if self.workers.world_size == 1:
            pieces = [p for p in pieces if len(p)]
        loss_sum = torch.zeros((), device=self.workers.device)
        for i, rows in enumerate(pieces):
            loss_sum += self._micro_step(rows, len(batch), sync=i == len(pieces) - 1)
        if self.settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum


def _one_graph_per_width(batch: dict[str, torch.Tensor]) -> None:
    """Batch size dynamic, width static: a compiled graph per padded width, never one with
    a symbolic sequence length (measured slow) and no recompiles for a short last batch."""
    for tensor in batch.values():
        torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_static(tensor, 1)


def _checkpoint_blobs(
    trainer: _Trainer, best_state: dict[str, torch.Tensor] | None, rng: list[dict[str, Any]],
) -> dict[str, bytes]:
    blobs = {
        "model.safetensors": save_safetensors(_state_dict_cpu(trainer.model)),
        "training.pt": tensors_to_bytes({
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "rng": rng,
        }),
    }
    if best_state is not None:
        blobs["best.safetensors"] = save_safetensors(best_state)
    return blobs


def _gather_rng(workers: Workers) -> list[dict[str, Any]]:
    """Every process's random state (each draws its own dropout masks)."""
    mine = capture_rng()
    if workers.world_size == 1:
        return [mine]
    everyone: list[Any] = [None] * workers.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def fit(
    model: torch.nn.Module,
    train: TokenTable,
    targets: torch.Tensor,
    settings: LoopSettings,
    workers: Workers,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    checkpointer: Checkpointer | None = None,
    on_progress: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    tracker_run_id: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_steps: int = 0,
) -> FitResult:
    """Train `model` (already on `workers.device`; logits = model(input_ids, attention_mask)).

    `evaluate(model)` (rank 0 only) returns at least `val_macro_f1` after each epoch: the
    best epoch's weights are kept and training stops early after `early_stopping_patience`
    epochs without improvement. With a checkpointer, training starts from its newest
    complete checkpoint and writes one every `checkpoint_every_steps` steps and at each
    epoch end. `on_progress` receives loss, speed and ETA every `log_every_steps` steps and
    the validation metrics every epoch (rank 0 only), and a progress report (see
    ml/progress.py; `clock` measures its wall time) at least every 30 seconds.
    `on_step(step)` runs after every optimizer step on every process (the benchmark times
    with it); `max_steps` > 0 stops after that many optimizer steps (the benchmark)."""
    report = on_progress if (on_progress and workers.is_main) else (lambda _m: None)
    if workers.device.type == "cuda":  # the peak reported is this fit's, not the process's
        torch.cuda.reset_peak_memory_stats(workers.device)
    trainer = _Trainer(model, train, targets, settings, workers, max_steps)
    if workers.world_size > 1:
        # DDP gave every process rank 0's weights; from here each draws its own dropout masks.
        torch.manual_seed(settings.seed + workers.rank)
    progress, best_state, resumed_from = _Progress(), None, None

    stored = checkpointer.latest() if checkpointer else None
    if stored is not None:
        model.load_state_dict(load_safetensors(stored.blobs["model.safetensors"]))
        training = tensors_from_bytes(stored.blobs["training.pt"])
        trainer.optimizer.load_state_dict(training["optimizer"])
        trainer.scheduler.load_state_dict(training["scheduler"])
        if "best.safetensors" in stored.blobs:
            best_state = load_safetensors(stored.blobs["best.safetensors"])
        progress = _Progress(**stored.state["progress"])
        rng = training["rng"]
        if len(rng) == workers.world_size:  # else: other processes, fresh dropout streams
            restore_rng(rng[workers.rank])
        tracker_run_id = stored.state.get("tracker_run_id") or tracker_run_id
        resumed_from = progress.step
        report({"resumed_from_step": float(progress.step), "epoch": progress.epoch + 1})

    reporter = ProgressReporter(trainer.total_steps, settings.epochs, progress.step,
                                clock=clock)

    def save_checkpoint() -> None:
        if checkpointer is None:
            return
        rng = _gather_rng(workers)  # a collective: every process takes part
        if workers.is_main:
            state = {"step": progress.step, "progress": asdict(progress),
                     "tracker_run_id": tracker_run_id, "world_size": workers.world_size}
            checkpointer.save(_checkpoint_blobs(trainer, best_state, rng), state)
        if workers.world_size > 1:
            dist.barrier()

    trained_rows, trained_seconds = 0, 0.0
    utilization: list[float] = []
    while not progress.finished:
        trainer.model.train()
        plan = epoch_batches(train.lengths, settings.batch_size, settings.seed, progress.epoch)
        epoch_loss = torch.zeros((), device=workers.device)
        window_start, window_rows, window_steps = time.perf_counter(), 0, 0
        window_loss = torch.zeros((), device=workers.device)
        while progress.next_batch < len(plan) and not _done(progress, trainer):
            batch = plan[progress.next_batch]
            loss_sum = trainer.step(batch)
            epoch_loss += loss_sum
            window_loss += loss_sum
            progress.step += 1
            progress.next_batch += 1
            progress.epoch_rows += len(batch)
            window_rows += len(batch)
            window_steps += 1
            if on_step is not None:
                on_step(progress.step)
            status = reporter.update(progress.step, progress.epoch + 1, len(batch))
            if status is not None:
                report(status)
            if progress.step % settings.log_every_steps == 0:
                loss_total = _all_sum(window_loss.clone(), workers).item()
                now = time.perf_counter()
                seconds = max(now - window_start, 1e-9)
                trained_rows += window_rows
                trained_seconds += seconds
                _sample_utilization(workers.device, utilization)
                steps_per_s = window_steps / seconds
                report({
                    "step": progress.step, "epoch": progress.epoch + 1,
                    "train/loss": loss_total / (window_rows * trainer.num_labels),
                    "train/lr": trainer.scheduler.get_last_lr()[0],
                    "train/steps_per_s": steps_per_s,
                    "train/samples_per_s": window_rows / seconds,
                    "train/eta_s": (trainer.total_steps - progress.step) / steps_per_s,
                })
                window_start, window_rows, window_steps = now, 0, 0
                window_loss.zero_()
            if (settings.checkpoint_every_steps
                    and progress.step % settings.checkpoint_every_steps == 0
                    and progress.next_batch < len(plan)):
                progress.epoch_loss_sum += _all_sum(epoch_loss, workers).item()
                epoch_loss = torch.zeros((), device=workers.device)
                save_checkpoint()
        trained_rows += window_rows
        trained_seconds += time.perf_counter() - window_start
        _sample_utilization(workers.device, utilization)  # short epochs get a reading too
        progress.epoch_loss_sum += _all_sum(epoch_loss, workers).item()
        epoch_done = progress.next_batch >= len(plan)
        record = {"epoch": float(progress.epoch + 1),
                  "train_loss": progress.epoch_loss_sum / (
                      max(progress.epoch_rows, 1) * trainer.num_labels)}
        if evaluate is not None:
            metrics = evaluate(trainer.model) if workers.is_main else None
            metrics = _broadcast(metrics, workers)
            record.update(metrics)
            if metrics[MONITOR] > progress.best_score:
                progress.best_score, progress.stale_epochs = metrics[MONITOR], 0
                best_state = _state_dict_cpu(trainer.model)
            else:
                progress.stale_epochs += 1
        progress.history.append(record)
        report({"epoch": progress.epoch + 1, "train/loss": record["train_loss"],
                **{k.replace("val_", "val/", 1): v for k, v in record.items()
                   if k.startswith("val_")}})
        if epoch_done:
            progress.epoch, progress.next_batch = progress.epoch + 1, 0
            progress.epoch_loss_sum, progress.epoch_rows = 0.0, 0
        patience = settings.early_stopping_patience
        stop = bool(patience) and progress.stale_epochs >= patience
        progress.finished = stop or progress.epoch >= settings.epochs or _done(progress, trainer)
        if stop:
            report({"early_stopped_after_epoch": float(progress.epoch)})
        save_checkpoint()  # also the last: a kill before the model is saved redoes nothing

    result = FitResult(
        history=progress.history, best_state=best_state, steps=progress.step,
        resumed_from_step=resumed_from,
        samples_per_s=trained_rows / max(trained_seconds, 1e-9),
        processes=workers.world_size, tracker_run_id=tracker_run_id,
    )
    if workers.device.type == "cuda":
        result.peak_gpu_memory_mb = torch.cuda.max_memory_allocated(workers.device) / 2**20
        result.gpu_utilization_percent = (
            float(np.mean(utilization)) if utilization else None)
    return result


def _done(progress: _Progress, trainer: _Trainer) -> bool:
    return progress.step >= trainer.total_steps


@contextmanager
def process_group() -> Iterator[Workers]:
    """start_workers() for the duration of a block."""
    workers = start_workers()
    try:
        yield workers
    finally:
        stop_workers()
