"""Benchmark: BERT fine-tuning throughput, Hugging Face Trainer against our training loop.

    python -m trending_assets.bench.bert [--quick] [--models minilm bert-base]
                                         [--lengths short long] [--compile]

The same multi-label classifier (a BERT-family encoder, mean-pooled, linear head, 20
labels, BCE loss; random weights from a config, nothing downloaded) trains on the same
synthetic token stream three ways:

- trainer_fp32: HF Trainer as users usually write it: fp32, every text padded to
  max_length, default collator.
- trainer_fast: HF Trainer with bf16 (on CUDA; fp32 on CPU, where Trainer has no bf16
  speed-up to give), dynamic padding to the longest text of each batch, group_by_length.
- ours: trending_assets.ml.bert.loop.fit: length buckets, dynamic padding to a multiple
  of 8, bf16 autocast on CUDA, fused AdamW, no host sync inside a step.

Shapes: MiniLM-L6-H384 (the bundled model) and BERT-base. Texts: "short" (synopsis-like,
mean about 42 tokens, max 128) and "long" (plot-like, mean about 198, max 256). Each way
runs `warmup` optimizer steps, then `steps` timed ones (CUDA synchronised at both ends).
samples/s counts timed samples; useful TFLOP/s counts only real (non-pad) tokens:
6 x non-embedding parameters per token plus attention (12 x layers x hidden x length^2
per sequence, forward and backward), whatever padding a way adds.

Batch sizes: Trainer rows use 32 (fp32) and 64 (fast) on GPU, ours 256 (`--batch-size`);
`--quick` (CPU-sized: a few minutes on 2 cores) uses 4 everywhere, 1 warm-up and 2 timed
steps: a smoke test of the three ways, too short for CPU figures to mean much. The
last line is JSON: `ratio_vs_trainer_fp32` and `ratio_vs_best_trainer` are the smallest,
over every model/length, of ours' samples/s divided by that Trainer row's.

Imports only torch, numpy and transformers (+ accelerate for the Trainer rows), so it runs
on a bare GPU image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import BertConfig, BertModel

from trending_assets.ml.bert.data import TokenTable
from trending_assets.ml.bert.loop import Workers, default_device, fit
from trending_assets.ml.bert.model import MeanPoolClassifier
from trending_assets.ml.markdown import md_table

if TYPE_CHECKING:
    from trending_assets.ml.bert.params import LoopSettings

NUM_LABELS = 20
VOCAB = 30522
CLS, SEP, PAD = 101, 102, 0
SHAPES = {
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072},
}
LENGTHS = {  # (mean, max) tokens per text, [CLS] and [SEP] included
    "short": (41.5, 128),
    "long": (198.0, 256),
}
WAYS = ("trainer_fp32", "trainer_fast", "ours")


@dataclass(frozen=True)
class Plan:
    warmup: int
    steps: int
    trainer_fp32_batch: int
    trainer_fast_batch: int
    ours_batch: int
    compile: bool


@dataclass
class Row:
    model: str
    length: str
    way: str
    batch_size: int
    precision: str
    samples_per_s: float
    useful_tflops: float
    mean_tokens: float
    seconds: float


def synthetic_stream(length: str, rows: int, seed: int) -> tuple[TokenTable, np.ndarray]:
    """Token ids ([CLS] random words [SEP]) with lengths of the named kind, and labels."""
    mean, longest = LENGTHS[length]
    rng = np.random.default_rng(seed)
    if length == "short":  # right-skewed like synopses
        lengths = rng.gamma(4.0, (mean - 4) / 4.0, rows) + 4
    else:
        lengths = rng.normal(mean, 35.0, rows)
    lengths = np.clip(np.rint(lengths), 8, longest).astype(np.int64)
    ids = [[CLS, *rng.integers(1000, VOCAB, n - 2).tolist(), SEP] for n in lengths]
    labels = (rng.random((rows, NUM_LABELS)) < 0.12).astype(np.float32)
    table = TokenTable.from_lists(ids, PAD)
    if table.ids.shape[1] < longest:  # pad the table to max_length (the fp32 way uses it)
        pad = np.full((rows, longest - table.ids.shape[1]), PAD, dtype=np.int64)
        table = TokenTable(np.hstack([table.ids, pad]), table.lengths, PAD)
    return table, labels


class CountingClassifier(torch.nn.Module):
    """The classifier, counting real tokens and squared lengths on the device (no sync),
    and returning a loss when labels are given (what HF Trainer expects)."""

    def __init__(self, inner: MeanPoolClassifier) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("tokens", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("squares", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("samples", torch.zeros((), dtype=torch.float64), persistent=False)

    @property
    def num_labels(self) -> int:
        return self.inner.num_labels

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Any:
        real = attention_mask.sum(1).to(torch.float64)
        self.tokens += real.sum()
        self.squares += (real * real).sum()
        self.samples += real.numel()
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        if labels is None:
            return logits
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        return {"loss": loss, "logits": logits}

    def reset(self) -> None:
        for buffer in (self.tokens, self.squares, self.samples):
            buffer.zero_()


def random_classifier(dims: dict[str, int], device: torch.device, seed: int,
                      dropout: float = 0.1, max_positions: int = 512) -> MeanPoolClassifier:
    """Our classifier over a BERT encoder of the given dimensions, random weights from a
    config (nothing downloaded); `dropout` in the encoder and before the head."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=max_positions,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        **dims)
    config._attn_implementation = "sdpa"  # what from_pretrained picks for BERT
    encoder = BertModel(config, add_pooling_layer=False)
    return MeanPoolClassifier(encoder, NUM_LABELS, dropout).to(device)


def build_model(shape: str, device: torch.device, seed: int) -> CountingClassifier:
    return CountingClassifier(random_classifier(SHAPES[shape], device, seed))


def non_embedding_params(model: CountingClassifier) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


class _Clock:
    """Wall time from the end of step `warmup` to the end of step `warmup + steps`, with the
    device synchronised at those two points only; counters restart when timing starts."""

    def __init__(self, model: CountingClassifier, device: torch.device, warmup: int,
                 steps: int) -> None:
        self.model, self.device, self.warmup, self.final = model, device, warmup, warmup + steps
        self.start = self.end = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def after_step(self, step: int) -> None:
        if step == self.warmup:
            self.start = self._now()
            self.model.reset()
        elif step == self.final:
            self.end = self._now()


# The benchmark's own loop recipe, fixed so results compare across machines and commits
# (not the pipeline's configuration); each run sets epochs, batch and learning rate.
BENCH_LOOP = {"seed": 0, "grad_accum_steps": 1, "weight_decay": 0.01, "warmup_ratio": 0.0,
              "max_grad_norm": 1.0, "pad_multiple": 8, "compile": False,
              "early_stopping_patience": 0, "checkpoint_every_steps": 0,
              "log_every_steps": 10**9, "precision": "auto"}


def loop_settings(**values: Any) -> LoopSettings:
    """BENCH_LOOP with `values` on top. A plain namespace, not the LoopSettings schema:
    pydantic is not in the bare GPU image, and the loop only reads attributes."""
    return SimpleNamespace(**{**BENCH_LOOP, **values})  # type: ignore[return-value]


def run_ours(model: CountingClassifier, table: TokenTable, labels: np.ndarray, plan: Plan,
             device: torch.device, clock: _Clock) -> None:
    settings = loop_settings(
        epochs=10**6, batch_size=plan.ours_batch, learning_rate=5e-5, seed=0,
        warmup_ratio=0.0, compile=plan.compile, log_every_steps=10**9)
    fit(model, table, torch.from_numpy(labels), settings, Workers(0, 1, device),
        on_step=clock.after_step, max_steps=plan.warmup + plan.steps)


def run_trainer(model: CountingClassifier, table: TokenTable, labels: np.ndarray, plan: Plan,
                device: torch.device, clock: _Clock, fast: bool) -> None:
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    if fast:  # dynamic padding, lengths known to the sampler
        items = [{"input_ids": table.ids[i, : table.lengths[i]], "labels": labels[i]}
                 for i in range(len(table))]
    else:  # every text padded to max_length
        items = [{"input_ids": torch.from_numpy(table.ids[i]),
                  "attention_mask": torch.from_numpy(
                      (np.arange(table.ids.shape[1]) < table.lengths[i]).astype(np.int64)),
                  "labels": torch.from_numpy(labels[i])} for i in range(len(table))]

    def pad_to_longest(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            ids[row, : len(feature["input_ids"])] = torch.from_numpy(feature["input_ids"])
            mask[row, : len(feature["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.from_numpy(np.stack([f["labels"] for f in features]))}

    class Timing(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.after_step(state.global_step)

    # transformers 5.2x spells group_by_length as a sampling strategy; earlier, a flag.
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    grouping = ({"train_sampling_strategy": "group_by_length" if fast else "random"}
                if "train_sampling_strategy" in names else {"group_by_length": fast})
    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(
            output_dir=output, per_device_train_batch_size=(
                plan.trainer_fast_batch if fast else plan.trainer_fp32_batch),
            max_steps=plan.warmup + plan.steps, learning_rate=5e-5, warmup_steps=0,
            bf16=fast and device.type == "cuda", **grouping,
            report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no",
            disable_tqdm=True, dataloader_num_workers=0, seed=0,
            use_cpu=device.type == "cpu",
        )
        Trainer(model=model, args=arguments, train_dataset=items,
                data_collator=pad_to_longest if fast else default_data_collator,
                callbacks=[Timing()]).train()


def measure(shape: str, length: str, way: str, plan: Plan, device: torch.device,
            seed: int) -> Row:
    batch = {"trainer_fp32": plan.trainer_fp32_batch, "trainer_fast": plan.trainer_fast_batch,
             "ours": plan.ours_batch}[way]
    rows = batch * (plan.warmup + plan.steps)
    table, labels = synthetic_stream(length, rows, seed)
    model = build_model(shape, device, seed)
    clock = _Clock(model, device, plan.warmup, plan.steps)
    if way == "ours":
        run_ours(model, table, labels, plan, device, clock)
    else:
        run_trainer(model, table, labels, plan, device, clock, fast=way == "trainer_fast")
    seconds = max(clock.end - clock.start, 1e-9)
    config = model.inner.encoder.config
    flops = (6 * non_embedding_params(model) * model.tokens.item()
             + 12 * config.num_hidden_layers * config.hidden_size * model.squares.item())
    samples = model.samples.item()
    bf16 = device.type == "cuda" and way != "trainer_fp32"
    return Row(model=shape, length=length, way=way, batch_size=batch,
               precision="bf16" if bf16 else "fp32", samples_per_s=samples / seconds,
               useful_tflops=flops / seconds / 1e12,
               mean_tokens=model.tokens.item() / max(samples, 1), seconds=seconds)


def ratios(rows: list[Row]) -> dict[str, float]:
    """Smallest ours / Trainer samples/s ratio over every model/length group."""
    by_group: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        by_group.setdefault((row.model, row.length), {})[row.way] = row.samples_per_s
    vs_fp32, vs_best = [], []
    for ways in by_group.values():
        vs_fp32.append(ways["ours"] / ways["trainer_fp32"])
        vs_best.append(ways["ours"] / max(ways["trainer_fp32"], ways["trainer_fast"]))
    return {"ratio_vs_trainer_fp32": round(min(vs_fp32), 3),
            "ratio_vs_best_trainer": round(min(vs_best), 3)}


def table_text(rows: list[Row]) -> str:
    return "\n".join(md_table(
        ("model", "data", "way", "batch", "precision", "samples/s", "useful TFLOP/s",
         "real tokens/sample"),
        [(r.model, r.length, r.way, r.batch_size, r.precision, f"{r.samples_per_s:,.1f}",
          f"{r.useful_tflops:.3f}", f"{r.mean_tokens:.1f}") for r in rows]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized: small batches, few steps")
    parser.add_argument("--models", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--lengths", nargs="+", choices=sorted(LENGTHS), default=list(LENGTHS))
    parser.add_argument("--batch-size", type=int, default=256, help="ours, full run")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps")
    parser.add_argument("--compile", action="store_true", help="torch.compile in our loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = default_device()
    if args.quick:
        plan = Plan(warmup=1, steps=args.steps or 2, trainer_fp32_batch=4,
                    trainer_fast_batch=4, ours_batch=4, compile=args.compile)
    else:
        plan = Plan(warmup=20, steps=args.steps or 100, trainer_fp32_batch=32,
                    trainer_fast_batch=64, ours_batch=args.batch_size, compile=args.compile)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device.type} ({name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, plan {asdict(plan)}", flush=True)
    rows = []
    for shape in args.models:
        for length in args.lengths:
            for way in WAYS:
                row = measure(shape, length, way, plan, device, args.seed)
                print(f"  {shape} {length} {way}: {row.samples_per_s:,.1f} samples/s, "
                      f"{row.useful_tflops:.3f} useful TFLOP/s", flush=True)
                rows.append(row)
    print(table_text(rows))
    print(json.dumps({**ratios(rows), "device": device.type, "quick": args.quick,
                      "rows": [asdict(r) for r in rows]}))


if __name__ == "__main__":
    main()
