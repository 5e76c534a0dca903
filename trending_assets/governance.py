"""Registry commands: retrain a version from its manifest, complete pending W&B links.

    python -m trending_assets.cli reproduce --model trending-now-xgboost --version 3
    python -m trending_assets.cli complete-wandb-links      # after `wandb sync`
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resources.io_manager import read_version_at
from resources.registry import ModelRegistry
from resources.tracking import complete_link
from trending_assets.assets.evaluation import score
from trending_assets.assets.ingestion import artifact_store
from trending_assets.assets.registry import MANIFEST_FILE
from trending_assets.lineage import table_version
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.gate import gate_metrics
from trending_assets.ml.manifest import environment_differences
from trending_assets.ml.reproduce import (
    MetricComparison,
    ReproductionError,
    compare_metrics,
    retrain,
    within,
)
from trending_assets.settings import Settings


@dataclass
class Reproduction:
    model: str
    version: int
    family: str
    tolerance: float
    rows: list[MetricComparison]
    environment_notes: list[str]

    @property
    def reproduced(self) -> bool:
        return within(self.rows, self.tolerance)

    @property
    def largest_difference(self) -> float:
        return max((abs(r.difference) for r in self.rows if r.difference is not None),
                   default=0.0)

    def table(self) -> str:
        lines = [f"{'metric':<40} {'recorded':>9} {'retrained':>9} {'difference':>10}"]
        for r in self.rows:
            again = "-" if r.reproduced is None else f"{r.reproduced:.4f}"
            diff = "-" if r.difference is None else f"{r.difference:+.4f}"
            lines.append(f"{r.metric:<40} {r.recorded:>9.4f} {again:>9} {diff:>10}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "family": self.family,
                "reproduced": self.reproduced, "tolerance": self.tolerance,
                "largest_difference": self.largest_difference, "metrics": len(self.rows),
                "environment_notes": self.environment_notes}


def reproduce_version(settings: Settings, model: str, version: int) -> Reproduction:
    """Retrain a registered version from its manifest (same split table, configuration and
    seeds) and compare the new test metrics with the recorded ones."""
    registry = ModelRegistry(artifact_store(settings))
    record = registry.get(model, version)
    manifest = json.loads(registry.document(model, version, MANIFEST_FILE))
    data = manifest["data"]
    if not data.get("splits_version"):
        raise ReproductionError(f"{model} v{version}: the manifest does not say which stored "
                                "split table it was trained on")
    splits, _ = read_version_at(registry.store, data["splits_key"], data["splits_version"],
                                TitleSplits)
    found = table_version(splits.table)
    if found != data["content_hash"]:
        raise ReproductionError(
            f"{model} v{version}: the stored split table hashes to {found}, the manifest "
            f"recorded {data['content_hash']}; the data the version was trained on is gone")
    family = manifest["family"]
    model_object = retrain(family, splits, manifest["config"], manifest.get("base_model"))
    result = score(model_object, family, splits, None)
    rows = compare_metrics(record["gate_metrics"], gate_metrics(result.overall, result.slices))
    return Reproduction(model, version, family, settings.registry.reproduce_tolerance[family],
                        rows, environment_differences(manifest))


def complete_wandb_links(registry: ModelRegistry, api: Any, entity: str | None = None,
                         log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Link every pending version into its W&B registry collection (oldest first), with the
    aliases the registry gives it now; record each link. `api` is a `wandb.Api()`."""
    entity = entity or api.default_entity
    if not entity:
        raise ValueError("no W&B entity: pass --entity or log in with `wandb login`")
    done = []
    for model in registry.models():
        current = registry.aliases(model)
        for version, link in registry.wandb_links(model).items():
            if link["status"] != "pending":
                continue
            aliases = sorted(a for a, v in current.items() if v == version)
            linked = complete_link(api, entity, link, aliases)
            registry.record_wandb_link(model, version, linked)
            log(f"{model} v{version}: linked to {link['target']} "
                f"(aliases: {', '.join(aliases) or 'none'})")
            done.append(linked)
    return done
