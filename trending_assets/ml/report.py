"""Evaluation of a multi-label genre classifier: thresholds, metrics, markdown report, plots."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from trending_assets.ml.dataset import OOD_SPLIT, TitleSplits
from trending_assets.ml.markdown import md_cell, md_table, md_value, numbers_right
from trending_assets.ml.metrics import apply_thresholds, choose_thresholds, multilabel_metrics

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PR_CURVE_MAX_POINTS = 101
TOP_CONFUSIONS = 10  # rows of the "most confused" table in the report
ANNOTATE_HEATMAP_UP_TO = 24  # genres; beyond this the cell numbers would not be legible
SLICE_COLUMN = "kind"  # test slices: movie, tv
SOURCE_COLUMN = "source"  # out-of-distribution slices: one per platform


@dataclass
class EvaluationResult:
    """Test metrics at thresholds chosen on validation, with slices and an optional baseline."""

    model_name: str
    genres: list[str]
    thresholds: dict[str, float]
    overall: dict
    slices: dict[str, dict]
    validation: dict
    baseline: dict | None = None
    # Test precision-recall curve per genre, downsampled:
    # {genre: {"precision": [...], "recall": [...], "average_precision": float}};
    # empty lists for a genre without a positive in test.
    pr_curves: dict[str, dict] = field(default_factory=dict)
    # genre_confusion[i][j]: test titles tagged genres[i] that the model predicted genres[j]
    # (multi-label: a title counts once per true genre and predicted genre; the diagonal is
    # the true positives). Empty when read from a result saved before it existed.
    genre_confusion: list[list[int]] = field(default_factory=list)

    plot_files: ClassVar[tuple[str, ...]] = (
        "per_genre_f1.png", "pr_curves.png", "genre_confusion.png")
    plot_titles: ClassVar[dict[str, str]] = {
        "per_genre_f1.png": "F1 per genre, with test support (and the baseline beside it)",
        "pr_curves.png": "Precision-recall per genre (dot: the chosen threshold)",
        "genre_confusion.png": "Tagged vs predicted genres",
    }

    @property
    def macro_f1(self) -> float:
        """Test macro F1."""
        return float(self.overall["macro_f1"])

    @property
    def micro_f1(self) -> float:
        """Test micro F1."""
        return float(self.overall["micro_f1"])

    def to_markdown(self) -> str:
        """A readable report: headline, baseline delta, slices, per-genre table."""
        lines = [f"# Evaluation: {md_cell(self.model_name)}", ""]
        lines += _summary_table("split", [("test", self.overall), ("validation", self.validation)])
        lines.append("")
        if self.baseline is not None:
            name = md_cell(str(self.baseline.get("model_name", "baseline")))
            deltas = [(label, float(self.overall[key]), float(self.baseline[key]))
                      for key, label in (("macro_f1", "macro F1"), ("micro_f1", "micro F1"))]
            lines += [f"## Versus baseline `{name}`", "", *md_table(
                ("metric", "this model", "baseline", "delta"),
                [(label, md_value(ours), md_value(theirs), md_value(ours - theirs, signed=True))
                 for label, ours, theirs in deltas], numbers_right(4)), ""]
        if self.slices:
            lines += ["## Slices (test)", ""]
            lines += _summary_table("slice", list(self.slices.items()))
            lines.append("")
        rows = self.per_genre_rows()
        columns = list(rows[0]) if rows else []
        lines += ["## Per genre (test)", "", *md_table(
            [c.replace("_", " ") for c in columns],
            [[md_value(row[c], signed=c.startswith("delta")) for c in columns] for row in rows],
            numbers_right(len(columns)))]
        lines += [
            "",
            "Thresholds were chosen per genre on validation (F1-maximising, grid 0.05-0.95) "
            "and applied unchanged to test. AP: average precision over all thresholds.",
            "",
        ]
        confusions = self.top_confusions()
        if confusions:
            lines += ["## Most confused genres (test)", "", *md_table(
                ("rank", "tagged", "predicted as", "titles", "share of tagged"),
                [(rank, c["tagged"], c["predicted"], c["titles"], md_value(c["share"]))
                 for rank, c in enumerate(confusions, start=1)],
                ("---:", "---", "---", "---:", "---:")), ""]
        return "\n".join(lines)

    def per_genre_rows(self) -> list[dict[str, Any]]:
        """The per-genre numbers behind the plots, best-supported genre first: precision,
        recall, F1, support, threshold, average precision, and the baseline's F1 and the
        difference when the baseline carries per-genre F1."""
        per_genre = self.overall["per_genre"]
        versus = (self.baseline or {}).get("per_genre_f1")
        rows = []
        for genre in _by_support(per_genre, self.genres):
            m = per_genre[genre]
            ap = (self.pr_curves.get(genre) or {}).get("average_precision")
            row: dict[str, Any] = {
                "genre": genre, "precision": m["precision"], "recall": m["recall"],
                "F1": m["f1"], "support": m["support"], "threshold": self.thresholds[genre],
                "AP": ap,
            }
            if versus is not None:
                theirs = versus.get(genre)
                row["baseline_F1"] = theirs
                row["delta_F1"] = None if theirs is None else m["f1"] - theirs
            rows.append(row)
        return rows

    def top_confusions(self, limit: int = TOP_CONFUSIONS) -> list[dict[str, Any]]:
        """The most frequent wrong genre predictions: a title tagged `tagged` that the model
        also (or instead) predicted as `predicted`, with the share of `tagged`'s titles."""
        if not self.genre_confusion:
            return []
        support = self.overall["per_genre"]
        pairs = [
            {"tagged": self.genres[i], "predicted": self.genres[j], "titles": count,
             "share": count / support[self.genres[i]]["support"]}
            for i, row in enumerate(self.genre_confusion)
            for j, count in enumerate(row) if i != j and count > 0
        ]
        pairs.sort(key=lambda p: (-p["titles"], -p["share"], p["tagged"], p["predicted"]))
        return pairs[:limit]

    def save(self, directory: Path) -> None:
        """Write metrics.json (everything), report.md and the plot PNGs into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(dataclasses.asdict(self), indent=2, allow_nan=False)
        (directory / METRICS_FILE).write_text(payload + "\n", encoding="utf-8")
        (directory / REPORT_FILE).write_text(self.to_markdown(), encoding="utf-8")
        for name, draw in zip(self.plot_files,
                              (_plot_per_genre_f1, _plot_pr_curves, _plot_genre_confusion),
                              strict=True):
            draw(self, directory / name)

    @classmethod
    def load(cls, directory: Path) -> EvaluationResult:
        """Read back from metrics.json only (markdown and plots are derived)."""
        data = json.loads((Path(directory) / METRICS_FILE).read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def evaluate(
    model_name: str,
    genres: Sequence[str],
    y_val: np.ndarray,
    p_val: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    test_slices: Mapping[str, np.ndarray],
    baseline: Mapping[str, Any] | None = None,
    held_out: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> EvaluationResult:
    """Thresholds are chosen on validation only, then applied to test.

    `held_out` maps a slice name to (labels, probabilities) of rows outside the test split
    (other platforms' titles): scored at the same thresholds and reported as slices."""
    genres = list(genres)
    y_test = np.asarray(y_test)
    p_test = np.asarray(p_test)
    thresholds = choose_thresholds(y_val, p_val)
    validation = multilabel_metrics(y_val, apply_thresholds(p_val, thresholds), genres)
    test_pred = apply_thresholds(p_test, thresholds)
    overall = multilabel_metrics(y_test, test_pred, genres)

    slices: dict[str, dict] = {}
    for name, mask in test_slices.items():
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (y_test.shape[0],):
            raise ValueError(
                f"slice {name!r}: expected a boolean mask of shape ({y_test.shape[0]},), "
                f"got dtype {mask.dtype} shape {mask.shape}"
            )
        slices[name] = multilabel_metrics(y_test[mask], test_pred[mask], genres)
    for name, (y_rows, p_rows) in (held_out or {}).items():
        slices[name] = multilabel_metrics(np.asarray(y_rows),
                                          apply_thresholds(np.asarray(p_rows), thresholds), genres)

    return EvaluationResult(
        model_name=model_name,
        genres=genres,
        thresholds={g: float(t) for g, t in zip(genres, thresholds, strict=True)},
        overall=overall,
        slices=slices,
        validation=validation,
        baseline=_plain_baseline(baseline),
        pr_curves={g: _pr_curve(y_test[:, j], p_test[:, j]) for j, g in enumerate(genres)},
        genre_confusion=genre_confusion(y_test, test_pred),
    )


def is_slice_name(name: str, kinds: Sequence[str]) -> bool:
    """Whether `evaluate_on_splits` can produce a slice called `name`: `kind=<kind>` for a
    kind the data may hold, `ood`, or `ood:source=<platform>`."""
    kind_slices = {f"{SLICE_COLUMN}={k}" for k in kinds}
    source_prefix = f"{OOD_SPLIT}:{SOURCE_COLUMN}="
    return name in kind_slices or name == OOD_SPLIT or (
        name.startswith(source_prefix) and len(name) > len(source_prefix))


def evaluate_on_splits(model: Any, model_name: str, splits: TitleSplits,
                       baseline: EvaluationResult | None = None) -> EvaluationResult:
    """`evaluate` a model (anything with `predict_proba(texts)`) on a split table: thresholds
    on validation, metrics on test (overall and per kind), and on the other platforms'
    titles (`ood`, and per source) when the table holds any."""
    test = splits.part("test")
    ood = splits.part(OOD_SPLIT)
    held_out: dict[str, tuple[Any, Any]] = {}
    if len(ood):
        labels = splits.labels(OOD_SPLIT)
        probabilities = model.predict_proba(splits.texts(OOD_SPLIT))
        held_out[OOD_SPLIT] = (labels, probabilities)
        for source in sorted(ood[SOURCE_COLUMN].unique()):
            rows = (ood[SOURCE_COLUMN] == source).to_numpy()
            held_out[f"{OOD_SPLIT}:{SOURCE_COLUMN}={source}"] = (labels[rows], probabilities[rows])
    return evaluate(
        model_name, splits.genres,
        splits.labels("val"), model.predict_proba(splits.texts("val")),
        splits.labels("test"), model.predict_proba(splits.texts("test")),
        {f"{SLICE_COLUMN}={v}": (test[SLICE_COLUMN] == v).to_numpy()
         for v in sorted(test[SLICE_COLUMN].unique())},
        held_out=held_out,
        baseline=None if baseline is None else {
            "model_name": baseline.model_name, "macro_f1": baseline.macro_f1,
            "micro_f1": baseline.micro_f1,
            # Drawn beside the candidate's bars in the per-genre plot and table.
            "per_genre_f1": {g: m["f1"] for g, m in baseline.overall["per_genre"].items()},
        },
    )


def genre_confusion(y_true: np.ndarray, y_pred: np.ndarray) -> list[list[int]]:
    """counts[i][j]: rows with true genre i and predicted genre j (multi-label co-occurrence
    of truth and prediction; the diagonal is the true positives per genre)."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    return (y_true.T @ y_pred).tolist()


def _plain_baseline(baseline: Mapping[str, Any] | None) -> dict | None:
    if baseline is None:
        return None
    missing = {"model_name", "macro_f1", "micro_f1"} - set(baseline)
    if missing:
        raise ValueError(f"baseline lacks {sorted(missing)}")
    plain = dict(baseline)
    plain.update(
        model_name=str(baseline["model_name"]),
        macro_f1=float(baseline["macro_f1"]),
        micro_f1=float(baseline["micro_f1"]),
    )
    if baseline.get("per_genre_f1") is not None:
        plain["per_genre_f1"] = {str(g): float(v) for g, v in baseline["per_genre_f1"].items()}
    return plain


def _pr_curve(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, Any]:
    y_true = np.asarray(y_true).astype(np.int8)
    if y_true.sum() == 0:
        # Without a positive the curve is undefined (sklearn warns and fakes recall=1).
        return {"precision": [], "recall": [], "average_precision": None}
    precision, recall, _ = precision_recall_curve(y_true, y_prob)
    # One point per distinct score is too much to keep in JSON; an even spread keeps the shape.
    keep = np.unique(np.linspace(0, len(precision) - 1, PR_CURVE_MAX_POINTS).round().astype(int))
    return {
        "precision": [round(float(v), 4) for v in precision[keep]],
        "recall": [round(float(v), 4) for v in recall[keep]],
        "average_precision": float(average_precision_score(y_true, y_prob)),
    }


def _by_support(per_genre: Mapping[str, Mapping[str, Any]], genres: Sequence[str]) -> list[str]:
    return sorted(genres, key=lambda g: (-per_genre[g]["support"], g))


def _summary_table(first: str, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    columns = ("samples", "macro_f1", "micro_f1", "micro_precision", "micro_recall")
    return md_table((first, "n", "macro F1", "micro F1", "micro precision", "micro recall"),
                    [(name, *(md_value(m[c]) for c in columns)) for name, m in rows],
                    numbers_right(6))


def _new_figure(width: float, height: float):
    # An explicit Agg canvas instead of pyplot: no display needed and no global figure registry
    # to leak figures from in a long-running worker.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _plot_per_genre_f1(result: EvaluationResult, path: Path) -> None:
    """F1 per genre with its test support; the baseline's bar beside it when known."""
    per_genre = result.overall["per_genre"]
    # barh draws bottom-up; reversing puts the best-supported genre on top.
    genres = _by_support(per_genre, result.genres)[::-1]
    versus = (result.baseline or {}).get("per_genre_f1")
    figure = _new_figure(7.5, max(3.0, (0.5 if versus else 0.35) * len(genres) + 2.0))
    axes = figure.add_subplot()
    positions = np.arange(len(genres), dtype=float)
    ours = [per_genre[g]["f1"] for g in genres]
    if versus is None:
        axes.barh(positions, ours, color="#4c72b0", label=result.model_name)
    else:
        height = 0.4
        axes.barh(positions + height / 2, ours, height=height, color="#4c72b0",
                  label=result.model_name)
        axes.barh(positions - height / 2, [versus.get(g, 0.0) for g in genres], height=height,
                  color="#bdbdbd", label=str(result.baseline["model_name"]))
    for y, value in zip(positions, ours, strict=True):
        axes.text(min(value + 0.01, 0.93), y + (0.2 if versus else 0.0), f"{value:.2f}",
                  va="center", fontsize="x-small")
    axes.set_yticks(positions, [f"{g} (n={per_genre[g]['support']})" for g in genres])
    axes.axvline(result.macro_f1, color="#c44e52", linestyle="--",
                 label=f"macro F1 {result.macro_f1:.3f}")
    if result.baseline is not None:
        axes.axvline(float(result.baseline["macro_f1"]), color="#8c8c8c", linestyle=":",
                     label=f"baseline macro F1 {float(result.baseline['macro_f1']):.3f}")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("F1 (test); n = titles with the genre in test")
    axes.set_title(f"{result.model_name}: F1 per genre"
                   + (f" vs {result.baseline['model_name']}" if versus else ""))
    # Below the axes: inside, it would hide the bars of the least-supported genres.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize="small",
                frameon=False)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _plot_pr_curves(result: EvaluationResult, path: Path) -> None:
    genres = result.genres
    columns = min(4, max(1, len(genres)))
    rows = max(1, math.ceil(len(genres) / columns))
    figure = _new_figure(3.0 * columns, 2.8 * rows)
    per_genre = result.overall["per_genre"]
    for index, genre in enumerate(genres):
        axes = figure.add_subplot(rows, columns, index + 1)
        curve = result.pr_curves.get(genre) or {}
        if curve.get("recall"):
            axes.step(curve["recall"], curve["precision"], where="post", color="#4c72b0")
            # The operating point the chosen threshold gives on test.
            m = per_genre[genre]
            axes.plot(m["recall"], m["precision"], "o", color="#c44e52", markersize=4)
            axes.set_title(f"{genre} (AP {curve['average_precision']:.2f})", fontsize="small")
        else:
            axes.text(0.5, 0.5, "no positive in test", ha="center", va="center",
                      fontsize="small")
            axes.set_title(genre, fontsize="small")
        axes.set_xlim(0.0, 1.0)
        axes.set_ylim(0.0, 1.05)
        axes.tick_params(labelsize="x-small")
        axes.set_xlabel("recall", fontsize="x-small")
        axes.set_ylabel("precision", fontsize="x-small")
    figure.suptitle(f"{result.model_name}: precision-recall per genre (test)")
    figure.tight_layout()
    figure.savefig(path, format="png")


def _plot_genre_confusion(result: EvaluationResult, path: Path) -> None:
    """Heatmap: of the test titles tagged with a genre (row), the share predicted as each
    genre (column). The diagonal is recall; bright cells off it are genres mistaken for
    each other (or tagged together and predicted together)."""
    genres = result.genres
    k = len(genres)
    # A result saved before the confusion counts existed draws an empty map.
    counts = np.asarray(result.genre_confusion or np.zeros((k, k)), dtype=float).reshape(k, k)
    support = np.array([result.overall["per_genre"][g]["support"] for g in genres], dtype=float)
    shares = np.divide(counts, support[:, None], out=np.zeros_like(counts),
                       where=support[:, None] > 0)
    size = max(4.0, 0.45 * k + 2.5)
    figure = _new_figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04,
                    label="share of the tagged titles")
    axes.set_xticks(np.arange(k), genres, rotation=60, ha="right", fontsize="x-small")
    axes.set_yticks(np.arange(k), [f"{g} (n={int(n)})" for g, n in zip(genres, support,
                                                                      strict=True)],
                    fontsize="x-small")
    if k <= ANNOTATE_HEATMAP_UP_TO:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    axes.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center",
                              fontsize=6, color="black" if shares[i, j] > 0.6 else "white")
    axes.set_xlabel("predicted genre")
    axes.set_ylabel("tagged genre (test)")
    axes.set_title(f"{result.model_name}: tagged vs predicted genres (test)")
    figure.tight_layout()
    figure.savefig(path, format="png")
