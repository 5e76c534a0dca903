"""BERT genre model: training on a tiny random BERT, save/load, determinism, input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from trending_assets.ml.bert.model import (
    BertGenreModel,
    MeanPoolClassifier,
    bundled_model_path,
    train_bert,
)
from trending_assets.ml.bert.params import BertParams
from trending_assets.ml.config import section_params
from trending_assets.ml.metrics import apply_thresholds, choose_thresholds

GENRES = ["scifi", "romance"]
SCIFI = ["space", "ship", "alien", "planet", "robot"]
ROMANCE = ["love", "kiss", "wedding", "heart", "date"]
FILLER = ["the", "a", "story", "of", "people", "in", "city", "old", "new", "town", "find", "day"]


def synthetic(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose genres are given by the presence of scifi / romance keywords."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.zeros((n, 2), dtype=np.int8)
    for i in range(n):
        labels[i] = [(1, 0), (0, 1), (1, 1)][i % 3]
        words = list(rng.choice(FILLER, size=rng.integers(3, 12)))
        if labels[i, 0]:
            words += list(rng.choice(SCIFI, size=2))
        if labels[i, 1]:
            words += list(rng.choice(ROMANCE, size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, labels


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-wide BERT with the bundled tokenizer, saved like a hub folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        # No dropout: the tiny random model then learns the task in a few epochs.
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    train_texts, train_labels = synthetic(180, seed=1)
    val_texts, val_labels = synthetic(60, seed=2)
    return train_texts, train_labels, val_texts, val_labels


@pytest.fixture(scope="module")
def params(tiny_bert: Path) -> BertParams:
    return section_params(
        BertParams, "bert", model_path=str(tiny_bert), max_length=32, epochs=5, batch_size=8,
        learning_rate=3e-3, seed=0,
    )


@pytest.fixture(scope="module")
def trained(data, params) -> tuple[BertGenreModel, list[dict[str, float]], list[dict]]:
    logged: list[dict] = []
    training = train_bert(*data, GENRES, params, log_fn=logged.append)
    return training.model, training.history, logged


@pytest.mark.e2e  # trains BERT: too slow for make test-fast
def test_training_learns_separable_task(trained, data) -> None:
    model, history, logged = trained
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "val_macro_f1"}
    assert max(h["val_macro_f1"] for h in history) >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]

    # The returned weights are the best epoch's.
    _, _, val_texts, val_labels = data
    probs = model.predict_proba(val_texts)
    predicted = apply_thresholds(probs, choose_thresholds(val_labels, probs))
    from sklearn.metrics import f1_score

    f1 = f1_score(val_labels, predicted, average="macro", zero_division=0)
    assert f1 == pytest.approx(max(h["val_macro_f1"] for h in history), abs=1e-6)

    step_logs = [m for m in logged if "step" in m]
    epoch_logs = [m for m in logged if "val/macro_f1" in m]
    assert step_logs and {"train/loss", "train/lr", "train/samples_per_s", "train/steps_per_s",
                          "train/eta_s"} <= set(step_logs[0])
    assert step_logs[-1]["train/eta_s"] < step_logs[0]["train/eta_s"]
    assert len(epoch_logs) == 5 and {"train/loss", "val/loss"} <= set(epoch_logs[0])


@pytest.mark.e2e  # trains BERT: too slow for make test-fast
def test_predict_proba_shape_and_order(trained, data) -> None:
    model = trained[0]
    _, _, val_texts, _ = data
    texts = [*val_texts[:7], ""]
    proba = model.predict_proba(texts, batch_size=3)
    assert proba.shape == (8, 2) and proba.dtype == np.float32
    assert ((proba >= 0) & (proba <= 1)).all()
    # Row order survives the length-sorted batching.
    single = np.vstack([model.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(proba, single, atol=1e-5)
    assert model.predict_proba([]).shape == (0, 2)


@pytest.mark.e2e  # trains BERT: too slow for make test-fast
def test_save_load_round_trip(trained, data, tmp_path: Path) -> None:
    model = trained[0]
    _, _, val_texts, _ = data
    model.save(tmp_path / "bert")
    files = {p.name for p in (tmp_path / "bert").iterdir()}
    assert "model.safetensors" in files and "genre_model.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pkl", ".pt", ".pth", ".pickle"))]
    meta = json.loads((tmp_path / "bert" / "genre_model.json").read_text())
    # Trained outside the bert_model asset: no record of the base weights was taken.
    assert meta == {"genres": GENRES, "max_length": 32, "base_model": None}

    loaded = BertGenreModel.load(tmp_path / "bert")
    assert loaded.genres == GENRES and loaded.max_length == 32
    assert loaded.base_model is None
    np.testing.assert_allclose(
        loaded.predict_proba(val_texts), model.predict_proba(val_texts), rtol=1e-6, atol=1e-6
    )


@pytest.mark.e2e  # trains BERT: too slow for make test-fast
def test_same_seed_same_history(data, params) -> None:
    quick = params.model_copy(update={"epochs": 1})
    first = train_bert(*data, GENRES, quick).history
    second = train_bert(*data, GENRES, quick).history
    for key in ("train_loss", "val_loss", "val_macro_f1"):
        assert [h[key] for h in first] == [h[key] for h in second]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_labels": np.zeros((180, 3))}, "expected \\(rows, 2\\)"),
        ({"train_labels": np.zeros((179, 2))}, "179 rows but train_texts has 180"),
        ({"train_texts": [], "train_labels": np.zeros((0, 2))}, "train set is empty"),
        ({"val_texts": ["x"]}, "val_labels has 60 rows but val_texts has 1"),
        ({"val_labels": np.full((60, 2), 2)}, "only 0/1"),
        ({"genres": []}, "genres is empty"),
        ({"train_texts": [None] * 180}, "must be strings"),
    ],
)
def test_bad_inputs_raise(data, params, change: dict, message: str) -> None:
    train_texts, train_labels, val_texts, val_labels = data
    kwargs = {
        "train_texts": train_texts, "train_labels": train_labels,
        "val_texts": val_texts, "val_labels": val_labels, "genres": GENRES, "params": params,
    } | change
    with pytest.raises(ValueError, match=message):
        train_bert(**kwargs)


def test_bad_params_raise(data, params) -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_bert(*data, GENRES, params.model_copy(update={"epochs": 0}))
    with pytest.raises(ValueError, match="epochs"):  # the schema refuses it first
        BertParams.model_validate({**params.model_dump(), "epochs": 0})


def test_bundled_minilm_loads_with_three_labels() -> None:
    from transformers import AutoModel

    path = bundled_model_path()
    assert (path / "model.safetensors").is_file()
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    network = MeanPoolClassifier(encoder, 3)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = BertGenreModel(network.eval(), tokenizer, ["a", "b", "c"], max_length=64)
    proba = model.predict_proba(["A crew explores a distant planet.", "Two friends fall in love."])
    assert proba.shape == (2, 3)
    assert ((proba >= 0) & (proba <= 1)).all()


@pytest.mark.e2e  # trains BERT: too slow for make test-fast
def test_warm_start_from_saved_model_with_other_genres(trained, data, params, tmp_path) -> None:
    trained[0].save(tmp_path / "previous")
    train_texts, train_labels, val_texts, val_labels = data
    three = ["scifi", "romance", "other"]
    pad = np.zeros((len(train_labels), 1), dtype=np.int8)
    training = train_bert(
        train_texts, np.hstack([train_labels, pad]),
        val_texts, np.hstack([val_labels, pad[: len(val_labels)]]),
        three, params.model_copy(update={"model_path": str(tmp_path / "previous"), "epochs": 1}),
    )
    model, history = training.model, training.history
    assert model.genres == three and model.predict_proba(val_texts[:4]).shape == (4, 3)
    assert len(history) == 1
