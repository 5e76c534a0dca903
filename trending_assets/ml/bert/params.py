"""The `bert:` parameters (no torch import: settings and the registry load them cheaply).

`LoopSettings` is what the training loop reads; `BertParams` adds the model's keys and is
the whole `bert:` section of configs/base.yaml, which holds the values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trending_assets.ml.config import StrictModel


class LoopSettings(StrictModel):
    """How to train: the loop's keys of the `bert:` section of configs/base.yaml (BertParams
    adds the model's). `batch_size` is per optimizer step over all processes, so changing
    the process count or `grad_accum_steps` keeps the optimisation."""

    epochs: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=1, le=4096, description="rows per optimizer step, all processes")
    learning_rate: float = Field(gt=0, le=1)
    seed: int = Field(ge=0, le=2**31 - 1)
    grad_accum_steps: int = Field(ge=1, le=1024, description="micro-batches per optimizer step")
    weight_decay: float = Field(ge=0, le=1)
    warmup_ratio: float = Field(ge=0, lt=1)
    max_grad_norm: float = Field(ge=0, le=1e3, description="gradient clipping; 0 = off")
    pad_multiple: int = Field(ge=1, le=128, description="batch widths round up to a multiple")
    compile: bool = Field(description="torch.compile, one graph per padded width")
    early_stopping_patience: int = Field(
        ge=0, le=100,
        description="stop after this many epochs without a better val macro-F1; 0 = off")
    checkpoint_every_steps: int = Field(
        ge=0, le=10_000_000,
        description="checkpoint cadence in optimizer steps; 0 = at epoch ends only")
    log_every_steps: int = Field(ge=1, le=10_000_000)
    precision: Literal["auto", "fp32"] = Field(
        description="auto: bf16 autocast on a GPU, fp32 on CPU; fp32: fp32 everywhere")


class BertParams(LoopSettings):
    """The `bert:` section of configs/base.yaml (which holds the values): the loop's
    settings plus the model's; `train_bert` passes it to the loop as it is."""

    model_path: str | None = Field(
        description="Hugging Face BERT-family model folder (saved with save_pretrained): a "
                    "local folder or s3://bucket/prefix; null = the bundled MiniLM")
    max_length: int = Field(ge=8, le=512)
    head_dropout: float = Field(ge=0, lt=1)
    threads: int = Field(ge=0, le=512, description="torch CPU threads; 0 = all cores")
    processes: int = Field(
        ge=1, le=16, description="data-parallel worker processes per node (torchrun); 1 = one "
                                 "plain process. On Kubernetes the pod's GPU count equals this")

    @model_validator(mode="after")
    def _model_path_readable(self) -> BertParams:
        if self.model_path and "://" in self.model_path and not self.model_path.startswith(
                "s3://"):
            raise ValueError(
                f"model_path {self.model_path!r}: use a local folder or s3://bucket/prefix "
                "holding a model saved with save_pretrained (nothing is downloaded from a "
                "model hub)")
        return self
