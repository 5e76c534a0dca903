"""A tiny BERT network and token table for the training-loop tests."""

from __future__ import annotations

import numpy as np
import torch
from transformers import BertConfig, BertModel

from trending_assets.ml.bert.data import TokenTable
from trending_assets.ml.bert.loop import Workers
from trending_assets.ml.bert.model import MeanPoolClassifier
from trending_assets.ml.bert.params import LoopSettings
from trending_assets.ml.config import section_params


def table(rows: int = 40, seed: int = 0) -> tuple[TokenTable, torch.Tensor]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, rows)
    ids = [[101, *rng.integers(1000, 1100, n - 2).tolist(), 102] for n in lengths]
    labels = torch.as_tensor(rng.random((rows, 3)) < 0.4, dtype=torch.float32)
    return TokenTable.from_lists(ids, 0), labels


def tiny_network(seed: int = 0) -> MeanPoolClassifier:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=1200, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return MeanPoolClassifier(BertModel(config, add_pooling_layer=False), 3, dropout=0.0)


CPU = Workers(0, 1, torch.device("cpu"))


def loop_settings(**values: object) -> LoopSettings:
    """The configured loop (configs/ `bert:`) with a test's values on top."""
    return section_params(LoopSettings, "bert", **values)
