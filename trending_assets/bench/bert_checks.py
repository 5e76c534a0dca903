"""GPU acceptance checks for the BERT training loop: run them on a new GPU node, before the
throughput benchmark (`python -m trending_assets.bench.bert`).

    python -m trending_assets.bench.bert_checks [--checks precision resume metrics
                                                 data_parallel] [--seed 0]

The loop's CUDA-only paths (bf16 autocast, CUDA random state in checkpoints, GPU memory and
utilisation figures, the NCCL process group) never run in CI, which has no GPU. Each check
trains a tiny random BERT (BertConfig: hidden 32, 2 layers, 2 heads; nothing downloaded) on
the benchmark's synthetic "short" token stream (`bench.bert.synthetic_stream`) with
`bert.loop.fit` on `default_device()` (CUDA if present, else CPU), and gives one row:
check, device, passed, figure, detail. On CPU the same checks prove the CPU behaviour.

- precision: a 30-step fit. Every step's loss is finite and the last steps' mean is below
  the first step's (figure: that ratio, must be < 1). The precision is the one
  `autocast(device)` asks for (FitResult does not record it), cross-checked against the
  dtype a Linear layer actually produced inside `fit`: bf16 on CUDA, fp32 on CPU; the
  weights stay fp32 either way.
- resume: 16 steps (2 epochs) with dropout on and a checkpoint every 5 steps, uninterrupted;
  then the same run stopped at step 7 (an exception from `on_step`: the newest checkpoint is
  step 5, mid-epoch) and resumed by a second `fit` on the same storage in a fresh model
  built with another seed (so weights, optimizer, schedule, batch position and random state
  must all come from the checkpoint). Figure: the largest absolute weight difference from
  the uninterrupted run. Tolerance 1e-5 on CPU (same kernels, same inputs: measured 0).
  On CUDA the checks run with `torch.use_deterministic_algorithms(True, warn_only=True)`
  and CUBLAS_WORKSPACE_CONFIG=:4096:8, so a correct resume should again give 0; the
  tolerance is 1e-4, a twentieth of one optimizer step's largest update (lr 2e-3), which
  leaves room for a kernel that has no deterministic version (named in the detail, from
  the warn-only warnings) perturbing a bf16 rounding, while a missing random-state restore
  (other dropout masks) differs by several learning rates (CPU, restore disabled: 8.6e-3).
- metrics: on CUDA, `FitResult.summary()` has a positive peak GPU memory figure (at most
  the device's memory) and a utilisation in [0, 100]; utilisation may be None only when
  `torch.cuda.utilization` itself fails (no pynvml/NVML: the detail quotes the error). On
  CPU the row passes, with detail "not applicable on cpu", only if both figures are None.
- data_parallel: torchrun (`torch.distributed.run`, the launcher `bert.launch` uses) starts
  this module as worker processes that join through the product's `start_workers()` (gloo
  on CPU, NCCL on CUDA), all-reduce one probe tensor, and train with `fit`; rank 0's weights
  are compared with a one-process run (dropout off: each process draws its own masks).
  Processes: 2 on CPU, min(2, GPUs) on CUDA. With one GPU that is 1 process: NCCL
  initialises and the probe all-reduce runs, but the loop itself skips DDP and its
  all-reduces at world size 1 (said in the detail). Figure: the largest absolute weight
  difference. Tolerance 1e-4 on CPU, where only the summation order differs (each process
  pads and multiplies its own half-batch); measured 4e-6 to 4e-5 over seeds 0-7, the
  largest on embedding rows of tokens seen once, whose near-epsilon gradients Adam
  amplifies, while training moves weights by 2.5e-2. On CUDA both runs use fp32
  (`precision="fp32"` in LoopSettings): bf16 rounds each process's gradient (8
  significant bits) before the all-reduce, which can flip the sign of a near-cancelling
  gradient element, and Adam turns a flipped sign into a whole learning-rate step (2e-3),
  so under bf16 a weight comparison could not tell rounding from a broken all-reduce; bf16
  is covered by `precision`. In fp32 the noise is the CPU kind, from other kernels: tolerance
  2e-4, five times the CPU worst.

resume and data_parallel also require training to have moved the weights by at least 10x
the tolerance, so a pass means something. The CUDA tolerances are reasoned, not yet
measured: record the figures of the first GPU runs.

Output: a table, then one line of JSON {"device", "torch", "passed", "rows"}; exit status 1
when any check failed (a check that raises fails with the error as its detail).

Imports only torch, numpy, transformers and safetensors, like the benchmark, so it runs on
a bare GPU image. That is why data_parallel starts torchrun itself instead of calling
`bert.launch.train_bert_processes`: the launcher and its worker CLI (`ml.bert.train`) need
pandas, PyYAML, scikit-learn and a tokenizer folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file, save_file

from trending_assets.bench import bert as bench
from trending_assets.ml.bert.checkpoint import Checkpointer, DirectoryCheckpointStorage
from trending_assets.ml.bert.data import TokenTable
from trending_assets.ml.bert.loop import (
    FitResult,
    Workers,
    autocast,
    default_device,
    fit,
    start_workers,
    stop_workers,
)
from trending_assets.ml.bert.model import MeanPoolClassifier
from trending_assets.ml.markdown import md_table

if TYPE_CHECKING:
    from trending_assets.ml.bert.params import LoopSettings

CHECKS = ("precision", "resume", "metrics", "data_parallel")
MODULE = "trending_assets.bench.bert_checks"  # what torchrun starts as a worker
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64}
DROPOUT = 0.1
BATCH = 8
LEARNING_RATE = 2e-3
SHORT_STEPS = 30
RESUME_EPOCHS, RESUME_STEPS_PER_EPOCH, RESUME_EVERY, RESUME_STOP = 2, 8, 5, 7
DDP_EPOCHS, DDP_STEPS_PER_EPOCH = 2, 12
TOLERANCE = {  # largest |weight difference| allowed, by (check, device type); see above
    ("resume", "cpu"): 1e-5,
    ("resume", "cuda"): 1e-4,
    ("data_parallel", "cpu"): 1e-4,
    ("data_parallel", "cuda"): 2e-4,
}
MEANINGFUL = 10  # training must move weights this many tolerances for a pass to mean much
FINGERPRINT = "bert-checks"
WEIGHTS, FIGURES = "weights.safetensors", "fit.json"


@dataclass
class Row:
    check: str
    device: str
    passed: bool
    figure: float | None  # None where there is no number (or it was not finite)
    detail: str


def row(check: str, device: torch.device, passed: bool, figure: float | None,
        detail: str) -> Row:
    finite = figure is not None and math.isfinite(figure)
    return Row(check, device.type, bool(passed), float(figure) if finite else None, detail)


def tiny_model(device: torch.device, seed: int, dropout: float) -> MeanPoolClassifier:
    return bench.random_classifier(TINY, device, seed, dropout,
                                   max_positions=bench.LENGTHS["short"][1])


def stream(steps: int, seed: int) -> tuple[TokenTable, torch.Tensor]:
    table, labels = bench.synthetic_stream("short", steps * BATCH, seed)
    return table, torch.from_numpy(labels)


def settings(epochs: int, seed: int, **overrides: Any) -> LoopSettings:
    # No warm-up: the loss falls from the first step and the weights move from the first.
    return bench.loop_settings(epochs=epochs, batch_size=BATCH, learning_rate=LEARNING_RATE,
                               seed=seed, **overrides)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    if a.keys() != b.keys():
        raise ValueError(f"different weights: {sorted(a.keys() ^ b.keys())[:5]}")
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def compare(check: str, device: torch.device, expected: dict[str, torch.Tensor],
            actual: dict[str, torch.Tensor], moved: float, notes: Sequence[str] = ()) -> Row:
    """The row of a weight comparison: passes when the difference is within the device's
    tolerance and training moved the weights (by `moved`) far more than that."""
    tolerance = TOLERANCE[(check, device.type)]
    worst = max_difference(expected, actual)
    passed = worst <= tolerance and moved >= MEANINGFUL * tolerance
    detail = (f"max abs weight difference {worst:.3g} (tolerance {tolerance:g}); training "
              f"moved weights {moved:.3g} (needs >= {MEANINGFUL * tolerance:g})")
    return row(check, device, passed, worst, "; ".join([detail, *notes]))


def deterministic(device: torch.device) -> None:
    """On CUDA, deterministic kernels where they exist (warn-only: a kernel without one
    warns instead of failing the run), so runs that should agree do, exactly."""
    if device.type == "cuda":
        # Read when cuBLAS starts: set before the first CUDA matmul of this process.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def autocast_precision(device: torch.device) -> tuple[str, torch.dtype]:
    """What the loop's `autocast(device)` turns on, read from inside it."""
    with autocast(device):
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
            return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype)), dtype
    return "fp32", torch.float32


@dataclass
class ShortFit:
    """What the precision and metrics checks read from one short fit."""

    losses: list[float]  # every step's mean loss
    linear_dtypes: set[torch.dtype]  # what the first Linear layer produced during fit
    weight_dtypes: set[torch.dtype]
    summary: dict[str, Any]  # FitResult.summary()


def short_fit(device: torch.device, seed: int) -> ShortFit:
    model = tiny_model(device, seed, DROPOUT)
    seen: set[torch.dtype] = set()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    losses: list[float] = []

    def progress(metrics: dict[str, float]) -> None:
        if "step" in metrics:
            losses.append(metrics["train/loss"])

    table, targets = stream(SHORT_STEPS, seed)
    # A log (and a GPU utilisation sample) every step: the loss curve is the check.
    result: FitResult = fit(model, table, targets,
                            settings(1, seed, log_every_steps=1), Workers(0, 1, device),
                            on_progress=progress)
    hook.remove()
    return ShortFit(losses, seen, {p.dtype for p in model.parameters()}, result.summary())


def check_precision(run: ShortFit, device: torch.device) -> Row:
    name, dtype = autocast_precision(device)
    wanted = "bf16" if device.type == "cuda" else "fp32"
    losses = run.losses
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    start, end = (losses[0], float(np.mean(losses[-5:]))) if losses else (math.nan, math.nan)
    ratio = end / start if finite and start > 0 else math.nan
    seen = ", ".join(sorted(str(d).removeprefix("torch.") for d in run.linear_dtypes))
    passed = (finite and ratio < 1 and name == wanted and run.linear_dtypes == {dtype}
              and run.weight_dtypes == {torch.float32})
    detail = (f"{name} (autocast({device.type}); wanted {wanted}); Linear output in fit: "
              f"{seen or 'none seen'}; weights "
              f"{', '.join(sorted(str(d).removeprefix('torch.') for d in run.weight_dtypes))}; "
              f"loss {start:.4f} -> {end:.4f} (last 5 of {len(losses)} steps"
              f"{'' if finite else ', NOT finite'})")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        detail += "; this GPU has no native bf16 (emulated: slow)"
    return row("precision", device, passed, ratio, detail)


def nvml_error(device: torch.device) -> str | None:
    """Why `torch.cuda.utilization` (what the loop samples) fails here; None if it works."""
    try:
        torch.cuda.utilization(device)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def check_metrics(run: ShortFit, device: torch.device) -> Row:
    peak = run.summary.get("peak_gpu_memory_mb")
    utilisation = run.summary.get("gpu_utilization_percent")
    if device.type != "cuda":
        passed = peak is None and utilisation is None
        detail = ("not applicable on cpu" if passed else
                  f"GPU figures reported on cpu: peak {peak} MB, utilisation {utilisation}%")
        return row("metrics", device, passed, peak, detail)
    total = torch.cuda.get_device_properties(device).total_memory / 2**20
    peak_ok = peak is not None and 0 < peak <= total
    parts = [f"peak {peak} MB of {total:,.0f}"]
    if utilisation is None:
        why = nvml_error(device)
        utilisation_ok = why is not None
        parts.append(f"utilisation None ({why})" if why else
                     "utilisation None although torch.cuda.utilization works")
    else:
        utilisation_ok = 0 <= utilisation <= 100
        parts.append(f"utilisation {utilisation:.1f}%")
    return row("metrics", device, peak_ok and utilisation_ok, peak, "; ".join(parts))


class _Stop(Exception):
    """Ends a fit from `on_step`, as a killed process would (after its last checkpoint)."""


def _stop_at(step: int) -> Callable[[int], None]:
    def on_step(done: int) -> None:
        if done == step:
            raise _Stop(step)
    return on_step


def check_resume(device: torch.device, seed: int) -> Row:
    table, targets = stream(RESUME_STEPS_PER_EPOCH, seed)
    plan = settings(RESUME_EPOCHS, seed, checkpoint_every_steps=RESUME_EVERY)
    workers = Workers(0, 1, device)
    with tempfile.TemporaryDirectory(prefix="bert-checks-resume-") as tmp, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference = tiny_model(device, seed, DROPOUT)
        fit(reference, table, targets, plan, workers,
            checkpointer=Checkpointer(DirectoryCheckpointStorage(Path(tmp, "a")), FINGERPRINT))
        storage = DirectoryCheckpointStorage(Path(tmp, "b"))
        try:
            fit(tiny_model(device, seed, DROPOUT), table, targets, plan, workers,
                checkpointer=Checkpointer(storage, FINGERPRINT), on_step=_stop_at(RESUME_STOP))
        except _Stop:
            pass
        else:
            return row("resume", device, False, None, f"the run did not stop at {RESUME_STOP}")
        stored = Checkpointer(storage, FINGERPRINT).latest()
        if stored is None:
            return row("resume", device, False, None, "no checkpoint before the stop")
        # A fresh process's model: other weights and random state than the run had.
        resumed = tiny_model(device, seed + 1, DROPOUT)
        result = fit(resumed, table, targets, plan, workers,
                     checkpointer=Checkpointer(storage, FINGERPRINT))
    at_checkpoint = load_safetensors(stored.blobs["model.safetensors"])
    expected = cpu_state(reference)
    moved = max_difference(expected, at_checkpoint)
    total = RESUME_EPOCHS * RESUME_STEPS_PER_EPOCH
    notes = [f"stopped at step {RESUME_STOP}, resumed from {result.resumed_from_step}, "
             f"ended at {result.steps} of {total}"]
    nondeterministic = sorted({str(w.message).split(" does not have")[0] for w in caught
                               if "deterministic" in str(w.message)})
    if nondeterministic:
        notes.append("no deterministic kernel: " + ", ".join(nondeterministic)[:300])
    compared = compare("resume", device, expected, cpu_state(resumed), moved, notes)
    if result.resumed_from_step != stored.step or result.steps != total:
        compared.passed = False
    return compared


def ddp_case(seed: int) -> tuple[TokenTable, torch.Tensor, LoopSettings]:
    """fp32 on both sides (why: see data_parallel in the docstring); the same on CPU."""
    table, targets = stream(DDP_STEPS_PER_EPOCH, seed)
    return table, targets, settings(DDP_EPOCHS, seed, precision="fp32")


def worker(out: Path, seed: int) -> None:
    """One torchrun worker of data_parallel: join, probe the collective, train; rank 0
    writes its weights and figures to `out`."""
    workers = start_workers()
    try:
        deterministic(workers.device)
        probe = torch.ones((), device=workers.device)
        if dist.is_initialized():  # creates the NCCL communicator even at world size 1
            dist.all_reduce(probe)
        table, targets, plan = ddp_case(seed)
        model = tiny_model(workers.device, seed, dropout=0.0)
        result = fit(model, table, targets, plan, workers)
        if workers.is_main:
            save_file(cpu_state(model), str(out / WEIGHTS))
            (out / FIGURES).write_text(json.dumps({
                **result.summary(), "probe_sum": probe.item(),
                "backend": dist.get_backend() if dist.is_initialized() else None}))
    finally:
        stop_workers()


def check_data_parallel(device: torch.device, seed: int) -> Row:
    processes = 2 if device.type == "cpu" else min(2, torch.cuda.device_count())
    backend = "nccl" if device.type == "cuda" else "gloo"
    table, targets, plan = ddp_case(seed)
    single = tiny_model(device, seed, dropout=0.0)
    start = cpu_state(single)
    fit(single, table, targets, plan, Workers(0, 1, device))
    expected = cpu_state(single)
    with tempfile.TemporaryDirectory(prefix="bert-checks-ddp-") as tmp:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m", MODULE, "--worker", tmp,
                   "--seed", str(seed)]
        # One thread per process: 2 processes on the 2 cores CI has.
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            return row("data_parallel", device, False, None,
                       f"torchrun exited with {done.returncode}: " + " | ".join(tail))
        actual = load_file(str(Path(tmp, WEIGHTS)))
        figures = json.loads(Path(tmp, FIGURES).read_text())
    notes = [f"{figures['processes']} processes over {figures['backend']}, probe all-reduce "
             f"sum {figures['probe_sum']:g}, {figures['optimizer_steps']} steps"]
    if processes == 1:
        notes.append("1 GPU: the loop skips DDP and its all-reduces at world size 1")
    if device.type == "cuda":
        notes.append("fp32 on both sides")
    compared = compare("data_parallel", device, expected, actual,
                       max_difference(expected, start), notes)
    steps = DDP_EPOCHS * DDP_STEPS_PER_EPOCH
    if (figures["processes"] != processes or figures["backend"] != backend
            or figures["probe_sum"] != processes or figures["optimizer_steps"] != steps):
        compared.passed = False
    return compared


def run_checks(names: Sequence[str], device: torch.device, seed: int) -> list[Row]:
    """The named checks in order; one that raises gives a failed row with the error."""
    shared = cache(lambda: short_fit(device, seed))  # precision and metrics read one fit
    runners: dict[str, Callable[[], Row]] = {
        "precision": lambda: check_precision(shared(), device),
        "resume": lambda: check_resume(device, seed),
        "metrics": lambda: check_metrics(shared(), device),
        "data_parallel": lambda: check_data_parallel(device, seed),
    }
    rows = []
    for name in names:
        began = time.perf_counter()
        try:
            result = runners[name]()
        except Exception as error:
            result = row(name, device, False, None, f"raised {type(error).__name__}: {error}")
        print(f"  {name}: {'PASS' if result.passed else 'FAIL'} "
              f"({time.perf_counter() - began:.1f} s)", flush=True)
        rows.append(result)
    return rows


def figure_text(figure: float | None) -> str:
    return "-" if figure is None else f"{figure:.4g}"


def table_text(rows: Sequence[Row]) -> str:
    # A detail can hold a subprocess's output (pipes, brackets): md_table escapes it.
    return "\n".join(md_table(
        ("check", "device", "passed", "figure", "detail"),
        [(r.check, r.device, "PASS" if r.passed else "FAIL", figure_text(r.figure), r.detail)
         for r in rows]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.seed)
        return 0
    device = default_device()
    deterministic(device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    print(f"device: {device.type} ({name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}", flush=True)
    rows = run_checks(args.checks, device, args.seed)
    passed = all(r.passed for r in rows)
    print(table_text(rows))
    print(json.dumps({"device": device.type, "torch": torch.__version__, "passed": passed,
                      "rows": [asdict(r) for r in rows]}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
