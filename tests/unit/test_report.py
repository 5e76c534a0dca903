"""Evaluation report: per-genre numbers, confusion counts, plots and their W&B logging."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from resources.tracking import WandbTracker
from tests.helpers import wandb_offline
from tests.helpers.wandb_offline import frames, read_run
from trending_assets.ml.report import EvaluationResult, evaluate, genre_confusion

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENRES = ["Drama", "Comedy", "Horror"]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data.startswith(PNG_MAGIC)
    return struct.unpack(">II", data[16:24])


def hand_result(baseline: dict | None = None) -> EvaluationResult:
    """Six test titles whose predictions are fixed by hand (thresholds land on 0.5)."""
    y_test = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    # Title 3 (Comedy) is also predicted Drama, title 5 (Drama) is predicted Comedy only,
    # title 4 (Horror) is predicted Drama too.
    p_test = np.array([[.9, .1, .1], [.8, .7, .1], [.6, .9, .2], [.2, .8, .1],
                       [.7, .1, .9], [.2, .6, .1]])
    y_val = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    p_val = np.array([[.9, .1, .1], [.1, .9, .1], [.1, .1, .9], [.9, .9, .1]])
    return evaluate("candidate", GENRES, y_val, p_val, y_test, p_test, {}, baseline=baseline)


def test_genre_confusion_counts_tagged_against_predicted():
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    y_pred = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    # row = tagged genre, column = predicted genre
    assert genre_confusion(y_true, y_pred) == [[1, 2, 0], [0, 1, 0], [1, 0, 1]]


def test_report_tables_hold_the_numbers_behind_the_plots():
    result = hand_result(baseline={"model_name": "reference", "macro_f1": 0.5,
                                   "micro_f1": 0.6,
                                   "per_genre_f1": {"Drama": 0.25, "Comedy": 1.0}})
    assert result.thresholds == {"Drama": 0.5, "Comedy": 0.5, "Horror": 0.5}
    assert result.genre_confusion == [[2, 2, 0], [2, 3, 0], [1, 0, 1]]

    rows = {r["genre"]: r for r in result.per_genre_rows()}
    assert [r["genre"] for r in result.per_genre_rows()] == ["Comedy", "Drama", "Horror"]
    assert rows["Drama"]["support"] == 3 and rows["Drama"]["recall"] == pytest.approx(2 / 3)
    assert rows["Drama"]["precision"] == pytest.approx(2 / 4)
    assert rows["Drama"]["baseline_F1"] == 0.25
    assert rows["Drama"]["delta_F1"] == pytest.approx(rows["Drama"]["F1"] - 0.25)
    assert rows["Horror"]["baseline_F1"] is None and rows["Horror"]["delta_F1"] is None
    assert rows["Horror"]["AP"] == pytest.approx(1.0)

    assert result.top_confusions(limit=2) == [
        {"tagged": "Comedy", "predicted": "Drama", "titles": 2, "share": pytest.approx(2 / 3)},
        {"tagged": "Drama", "predicted": "Comedy", "titles": 2, "share": pytest.approx(2 / 3)},
    ]

    report = result.to_markdown()
    assert "| genre | precision | recall | F1 | support | threshold | AP | baseline F1 |" \
           " delta F1 |" in report
    drama_f1 = rows["Drama"]["F1"]
    assert (f"| Drama | 0.500 | 0.667 | {drama_f1:.3f} | 3 | 0.500 | "
            f"{rows['Drama']['AP']:.3f} | 0.250 | {drama_f1 - 0.25:+.3f} |") in report
    assert "| Horror | 1.000 | 1.000 | 1.000 | 1 | 0.500 | 1.000 | - | - |" in report
    assert "| 1 | Comedy | Drama | 2 | 0.667 |" in report
    assert "| 3 | Horror | Drama | 1 | 1.000 |" in report


def test_plots_are_drawn_and_the_baseline_adds_bars(tmp_path):
    alone, versus = tmp_path / "alone", tmp_path / "versus"
    hand_result().save(alone)
    hand_result(baseline={"model_name": "reference", "macro_f1": 0.5, "micro_f1": 0.6,
                          "per_genre_f1": {g: 0.5 for g in GENRES}}).save(versus)
    for directory in (alone, versus):
        for name in EvaluationResult.plot_files:
            width, height = png_size((directory / name).read_bytes())
            assert width >= 400 and height >= 250, (directory, name)
    # Side-by-side bars need more room per genre than a single bar.
    assert (png_size((versus / "per_genre_f1.png").read_bytes())[1]
            > png_size((alone / "per_genre_f1.png").read_bytes())[1])
    # The heatmap grows with the number of genres.
    many = [f"g{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    y = (rng.random((60, 12)) < 0.3).astype(int)
    y[0] = 1
    p = rng.random((60, 12))
    big = evaluate("many", many, y, p, y, p, {})
    big.save(tmp_path / "many")
    assert (png_size((tmp_path / "many" / "genre_confusion.png").read_bytes())[1]
            > png_size((alone / "genre_confusion.png").read_bytes())[1])


def test_result_saved_before_confusion_counts_still_loads_and_plots(tmp_path):
    result = hand_result()
    result.save(tmp_path)
    payload = json.loads((tmp_path / "metrics.json").read_text())
    del payload["genre_confusion"]
    (tmp_path / "metrics.json").write_text(json.dumps(payload))
    old = EvaluationResult.load(tmp_path)
    assert old.genre_confusion == []
    assert old.top_confusions() == []
    assert "Most confused" not in old.to_markdown()
    old.save(tmp_path / "again")
    assert (tmp_path / "again" / "genre_confusion.png").read_bytes().startswith(PNG_MAGIC)


def test_plots_and_table_reach_the_offline_wandb_run(tmp_path):
    result = hand_result()
    result.save(tmp_path / "eval")
    tracker = WandbTracker(mode="offline", dir=str(tmp_path / "wandb"))
    with tracker.start_run(name="eval", job_type="evaluate", config={"family": "x"}) as run:
        run.log_images({f"plots/{Path(n).stem}": tmp_path / "eval" / n
                        for n in result.plot_files})
        run.log_table("per_genre", result.per_genre_rows())
        folder = Path(run.folder)

    logged = read_run(folder)
    # The offline reader flattens a media value into "<key>/<field>" entries.
    history = {k: v for step in logged["history"] for k, v in step.items()}
    for name in result.plot_files:
        key = f"plots/{Path(name).stem}"
        assert history[f"{key}/_type"] == "image-file"
        stored = folder / "files" / history[f"{key}/path"]
        assert stored.read_bytes() == (tmp_path / "eval" / name).read_bytes()
    assert history["per_genre/_type"] == "table-file"
    assert history["per_genre/nrows"] == len(GENRES)
    content = json.loads((folder / "files" / history["per_genre/path"]).read_text())
    assert content["columns"][:5] == ["genre", "precision", "recall", "F1", "support"]
    by_genre = {row[0]: row for row in content["data"]}
    assert by_genre["Drama"][4] == 3
    assert by_genre["Drama"][3] == pytest.approx(result.overall["per_genre"]["Drama"]["f1"])


def test_offline_reader_waits_for_the_run_to_close(tmp_path, monkeypatch):
    """wandb may still be writing the run file when `finish()` returns: the reader must
    wait for the closing record, not read a file that lacks the logged history."""
    tracker = WandbTracker(mode="offline", dir=str(tmp_path / "wandb"))
    with tracker.start_run(name="eval", job_type="evaluate", config={"family": "x"}) as run:
        run.log_table("per_genre", hand_result().per_genre_rows())
        folder = Path(run.folder)
    assert read_run(folder)["history"][0]["per_genre/nrows"] == len(GENRES)

    # The same file as it was before its history record was written; the rest arrives
    # once the reader is waiting.
    (path,) = folder.glob("run-*.wandb")
    data = path.read_bytes()
    cut = next(end for end, payload in frames(data) if b"per_genre" in payload)
    cut = max(end for end, _ in frames(data) if end < cut)
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / path.name).write_bytes(data[:cut])
    read_once = threading.Event()
    read_records = wandb_offline.records

    def records_then_signal(found: Path) -> list:
        try:
            return read_records(found)
        finally:
            read_once.set()

    monkeypatch.setattr(wandb_offline, "records", records_then_signal)

    def finish_writing() -> None:
        # Only after the reader has seen the unfinished file.
        if read_once.wait(timeout=60):
            (partial / path.name).write_bytes(data)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    try:
        logged = read_run(partial, timeout=60)
    finally:
        read_once.set()
        writer.join()
    assert logged["history"][0]["per_genre/nrows"] == len(GENRES)
