"""Train a model family again from a recorded configuration, and compare metrics.

`retrain` does what the training assets do (TF-IDF fitted on train, then the family's
trainer with the configured parameters); `compare_metrics` puts recorded and reproduced
test metrics side by side against a tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trending_assets.ml import families
from trending_assets.ml.bert.model import bundled_model_path
from trending_assets.ml.config import params
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.gate import METRICS
from trending_assets.ml.manifest import folder_digest
from trending_assets.ml.tfidf import TfidfEncoder, TfidfFeatures, TfidfParams


class ReproductionError(RuntimeError):
    """The recorded inputs cannot be reproduced (data or base model differ)."""


def base_model_record(bert_config: Mapping[str, Any],
                      local_copy: str | Path | None = None) -> dict[str, Any]:
    """The BERT base weights a training starts from: where they are (`bert.model_path`, or
    the bundled folder) and the content hash of their files, read from `local_copy` when
    they live elsewhere (an s3:// model_path)."""
    path = str(bert_config.get("model_path") or bundled_model_path())
    return {"path": path, "sha256": folder_digest(local_copy or path)}


def retrain(family: str, splits: TitleSplits, config: Mapping[str, Any],
            base_model: Mapping[str, Any] | None = None) -> Any:
    """A model of `family` trained on `splits` with the recorded settings `config`, as its
    training asset trains it (ml/families.py): TF-IDF fitted on train first for a family
    that reads TF-IDF features. `base_model`: the recorded base weights (BERT)."""
    spec = families.family(family)
    if base_model is not None:
        here = base_model_record(config[spec.section])
        if here["sha256"] != base_model["sha256"]:
            raise ReproductionError(
                f"base model {here['path']} has sha256 {here['sha256'][:16]}, the "
                f"manifest recorded {base_model['sha256'][:16]} ({base_model['path']}); "
                "install the recorded weights (or point bert.model_path at them)")
    inputs: Any = splits
    if spec.input == "tfidf":
        encoder = TfidfEncoder.fit(splits.texts("train"), params(TfidfParams, config["tfidf"]))
        inputs = TfidfFeatures(
            encoder, splits.genres, encoder.transform(splits.texts("train")),
            splits.labels("train"), encoder.transform(splits.texts("val")), splits.labels("val"))
    return spec.fit(inputs, params(spec.params_type, config[spec.section]))


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    recorded: float
    reproduced: float | None

    @property
    def difference(self) -> float | None:
        return None if self.reproduced is None else self.reproduced - self.recorded


def compare_metrics(recorded: Mapping[str, Any], reproduced: Mapping[str, Any]
                    ) -> list[MetricComparison]:
    """Headline metrics overall and per slice, then F1 per genre (gate_metrics layout)."""
    rows = []
    scopes = [("", recorded["overall"], reproduced["overall"])] + [
        (f"{name}/", values, reproduced["slices"].get(name, {}))
        for name, values in sorted(recorded["slices"].items())]
    for prefix, ours, theirs in scopes:
        for metric in METRICS:
            if metric in ours:
                rows.append(MetricComparison(prefix + metric, float(ours[metric]),
                                             _maybe(theirs.get(metric))))
    for genre, values in sorted(recorded["per_genre"].items()):
        again = reproduced["per_genre"].get(genre, {})
        rows.append(MetricComparison(f"genre={genre}/f1", float(values["f1"]),
                                     _maybe(again.get("f1"))))
    return rows


def within(rows: list[MetricComparison], tolerance: float) -> bool:
    return all(r.difference is not None and abs(r.difference) <= tolerance for r in rows)


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)
