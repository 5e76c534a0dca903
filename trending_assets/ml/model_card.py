"""Model card per registered version: what the model is for, what it was trained on, how
well it does (overall, per slice, per genre), how it was judged, and what it cannot do.

`build_model_card` gives a JSON-able dict; `model_card_markdown` renders the same content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from trending_assets.ml.gate import criteria_markdown
from trending_assets.ml.markdown import md_table, md_text, md_value, numbers_right

CARD_SCHEMA = "trending-now/model-card/v1"


def build_model_card(
    *, model: str, version: int, family: str, evaluation: Any, blessing: Mapping[str, Any],
    gate: Mapping[str, Any], intended_use: str, limitations: Sequence[str],
    data: Mapping[str, Any], training_config: Mapping[str, Any], lineage: Mapping[str, Any],
) -> dict[str, Any]:
    """The card as a dict. `evaluation` is an EvaluationResult (overall, slices, thresholds,
    genres, validation); `data` holds data_version, split counts and the taxonomy."""
    overall = evaluation.overall
    headline = ("macro_f1", "micro_f1", "micro_precision", "micro_recall", "samples")
    return {
        "schema": CARD_SCHEMA,
        "model": model,
        "version": version,
        "family": family,
        "intended_use": intended_use,
        "decision": {"decision": blessing["decision"], "aliases": blessing["aliases"],
                     "summary": blessing["summary"], "policy": blessing["policy"],
                     "override": blessing.get("override")},
        "data": dict(data),
        "metrics": {
            "overall": {k: overall[k] for k in headline},
            "validation": {k: evaluation.validation[k] for k in headline},
            "slices": {name: {k: m[k] for k in headline}
                       for name, m in evaluation.slices.items()},
            "per_genre": {g: dict(m) for g, m in overall["per_genre"].items()},
        },
        "thresholds": {"decision_per_genre": dict(evaluation.thresholds), "gate": dict(gate)},
        "criteria": list(blessing["criteria"]),
        "limitations": [*limitations, *derived_limitations(evaluation, gate)],
        "training_config": dict(training_config),
        "lineage": dict(lineage),
    }


def derived_limitations(evaluation: Any, gate: Mapping[str, Any]) -> list[str]:
    """Limitations the numbers show: thin genres, weaker slices, missing OOD evaluation."""
    notes = []
    per_genre = evaluation.overall["per_genre"]
    floor = gate.get("genre_floor")
    if floor:
        thin = sorted(g for g, m in per_genre.items() if m["support"] < floor["min_support"])
        if thin:
            notes.append(
                f"Fewer than {floor['min_support']} test titles, so their F1 is not reliable "
                f"and not gated: {', '.join(thin)}.")
        weak = sorted((g for g, m in per_genre.items() if m["f1"] < floor["min_f1"]),
                      key=lambda g: per_genre[g]["f1"])
        if weak:
            notes.append("Test F1 below the genre floor "
                         f"{floor['min_f1']:.2f}: "
                         + ", ".join(f"{g} {per_genre[g]['f1']:.2f}" for g in weak) + ".")
    macro = float(evaluation.overall["macro_f1"])
    for name, m in sorted(evaluation.slices.items()):
        if m["samples"] and m["macro_f1"] < macro:
            notes.append(f"Slice {name}: macro-F1 {m['macro_f1']:.3f}, "
                         f"{macro - m['macro_f1']:.3f} below overall ({m['samples']} titles).")
    if "ood" not in evaluation.slices:
        notes.append("Not evaluated on the out-of-distribution platforms set in this version: "
                     "quality on other catalogues' synopses is unknown.")
    notes.append("Decision thresholds per genre were chosen on validation and applied "
                 "unchanged to test.")
    return notes


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Names left, numbers right, floats to 3 decimals."""
    return md_table(header, [[md_value(v) for v in row] for row in rows],
                    numbers_right(len(header)))


def model_card_markdown(card: Mapping[str, Any]) -> str:
    metrics = card["metrics"]
    data = card["data"]
    decision = card["decision"]
    lines = [f"# Model card: {card['model']} v{card['version']}", "",
             f"Family: {card['family']}. Decision: **{decision['decision']}**"
             + (f" (aliases: {', '.join(decision['aliases'])})" if decision["aliases"] else "")
             + ".", "", md_text(decision["summary"]), "",
             "## Intended use", "", card["intended_use"], "",
             "## Data", "",
             f"- data version (content hash of the split table): `{data.get('data_version')}`",
             f"- rows per split: {data.get('split_rows')}",
             f"- taxonomy: `{data.get('taxonomy_file')}` (sha256 "
             f"`{str(data.get('taxonomy_sha256'))[:16]}`), "
             f"{len(data.get('genres', []))} genres: {', '.join(data.get('genres', []))}", "",
             "## Metrics (test)", ""]
    scopes = [("overall", metrics["overall"]), ("validation", metrics["validation"]),
              *sorted(metrics["slices"].items())]
    lines += _table(("scope", "titles", "macro F1", "micro F1", "micro precision",
                     "micro recall"),
                    [(name, m["samples"], m["macro_f1"], m["micro_f1"], m["micro_precision"],
                      m["micro_recall"]) for name, m in scopes])
    lines += ["", "### Per genre", ""]
    thresholds = card["thresholds"]["decision_per_genre"]
    per_genre = metrics["per_genre"]
    lines += _table(("genre", "precision", "recall", "F1", "support", "threshold"),
                    [(g, m["precision"], m["recall"], m["f1"], m["support"], thresholds[g])
                     for g, m in sorted(per_genre.items(),
                                        key=lambda kv: (-kv[1]["support"], kv[0]))])
    lines += ["", "## Gate", "", *criteria_markdown(card["criteria"]), "",
              "## Known limitations", "", *(f"- {note}" for note in card["limitations"]), "",
              "## Training configuration", "", "```json",
              _json(card["training_config"]), "```", "",
              "## Lineage", "", "```json", _json(card["lineage"]), "```", ""]
    return "\n".join(lines)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
