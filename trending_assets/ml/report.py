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

from trending_assets.ml.metrics import apply_thresholds, choose_thresholds, multilabel_metrics

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PR_CURVE_MAX_POINTS = 101


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

    plot_files: ClassVar[tuple[str, ...]] = ("per_genre_f1.png", "pr_curves.png")

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
        lines = [f"# Evaluation: {_cell(self.model_name)}", ""]
        lines += _summary_table("split", [("test", self.overall), ("validation", self.validation)])
        lines.append("")
        if self.baseline is not None:
            name = _cell(str(self.baseline.get("model_name", "baseline")))
            lines += [
                f"## Versus baseline `{name}`",
                "",
                "| metric | this model | baseline | delta |",
                "|---|---:|---:|---:|",
            ]
            for key, label in (("macro_f1", "macro F1"), ("micro_f1", "micro F1")):
                ours, theirs = float(self.overall[key]), float(self.baseline[key])
                lines.append(f"| {label} | {ours:.3f} | {theirs:.3f} | {ours - theirs:+.3f} |")
            lines.append("")
        if self.slices:
            lines += ["## Slices (test)", ""]
            lines += _summary_table("slice", list(self.slices.items()))
            lines.append("")
        lines += [
            "## Per genre (test)",
            "",
            "| genre | precision | recall | F1 | support | threshold |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        per_genre = self.overall["per_genre"]
        for genre in _by_support(per_genre, self.genres):
            m = per_genre[genre]
            lines.append(
                f"| {_cell(genre)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
                f"| {m['support']} | {self.thresholds[genre]:.2f} |"
            )
        lines += [
            "",
            "Thresholds were chosen per genre on validation (F1-maximising, grid 0.05-0.95) "
            "and applied unchanged to test.",
            "",
        ]
        return "\n".join(lines)

    def save(self, directory: Path) -> None:
        """Write metrics.json (everything), report.md and the plot PNGs into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(dataclasses.asdict(self), indent=2, allow_nan=False)
        (directory / METRICS_FILE).write_text(payload + "\n", encoding="utf-8")
        (directory / REPORT_FILE).write_text(self.to_markdown(), encoding="utf-8")
        _plot_per_genre_f1(self, directory / self.plot_files[0])
        _plot_pr_curves(self, directory / self.plot_files[1])

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
) -> EvaluationResult:
    """Thresholds are chosen on validation only, then applied to test."""
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

    return EvaluationResult(
        model_name=model_name,
        genres=genres,
        thresholds={g: float(t) for g, t in zip(genres, thresholds, strict=True)},
        overall=overall,
        slices=slices,
        validation=validation,
        baseline=_plain_baseline(baseline),
        pr_curves={g: _pr_curve(y_test[:, j], p_test[:, j]) for j, g in enumerate(genres)},
    )


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


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _by_support(per_genre: Mapping[str, Mapping[str, Any]], genres: Sequence[str]) -> list[str]:
    return sorted(genres, key=lambda g: (-per_genre[g]["support"], g))


def _summary_table(first: str, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    lines = [
        f"| {first} | n | macro F1 | micro F1 | micro precision | micro recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        lines.append(
            f"| {_cell(name)} | {m['samples']} | {m['macro_f1']:.3f} | {m['micro_f1']:.3f} "
            f"| {m['micro_precision']:.3f} | {m['micro_recall']:.3f} |"
        )
    return lines


def _new_figure(width: float, height: float):
    # An explicit Agg canvas instead of pyplot: no display needed and no global figure registry
    # to leak figures from in a long-running worker.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _plot_per_genre_f1(result: EvaluationResult, path: Path) -> None:
    per_genre = result.overall["per_genre"]
    # barh draws bottom-up; reversing puts the best-supported genre on top.
    genres = _by_support(per_genre, result.genres)[::-1]
    figure = _new_figure(7.0, max(2.5, 0.35 * len(genres) + 1.2))
    axes = figure.add_subplot()
    positions = np.arange(len(genres))
    axes.barh(positions, [per_genre[g]["f1"] for g in genres], color="#4c72b0")
    axes.set_yticks(positions, [f"{g} (n={per_genre[g]['support']})" for g in genres])
    axes.axvline(result.macro_f1, color="#c44e52", linestyle="--",
                 label=f"macro F1 {result.macro_f1:.3f}")
    if result.baseline is not None:
        axes.axvline(float(result.baseline["macro_f1"]), color="#8c8c8c", linestyle=":",
                     label=f"baseline macro F1 {float(result.baseline['macro_f1']):.3f}")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("F1 (test)")
    axes.set_title(f"{result.model_name}: F1 per genre")
    axes.legend(loc="lower right", fontsize="small")
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
