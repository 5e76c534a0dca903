"""What is in production at a glance: version, since when, why, what it replaced; the same
in `cli summary` as on the registration assets."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from resources.registry import ModelRegistry
from resources.storage import LocalArtifactStore
from trending_assets.cli import format_production
from trending_assets.production import production_rows


def _save(text: str):
    def save(folder: Path) -> None:
        (folder / "model.bin").write_text(text)
    return save


def test_each_family_shows_its_production_version_since_when_why_and_what_it_replaced(
        tmp_path: Path) -> None:
    registry = ModelRegistry(LocalArtifactStore(tmp_path))
    model = "trending-now-xgboost"
    registry.register(model, _save("one"), {"run_id": "r1"}, ["production"],
                      "first champion: passed the value gate")
    registry.register(model, _save("two"), {"run_id": "r2"}, ["staging"], "a challenger")
    registry.set_alias(model, "production", 2, "beat v1 on macro-F1 by 0.031")
    registry.register("trending-now-bert", _save("b"), {"run_id": "r3"}, ["staging"],
                      "passed; waits for a person")

    xgboost, bert = production_rows(registry)

    assert (xgboost.family, xgboost.model, xgboost.version, xgboost.replaced, xgboost.reason) == (
        "xgboost", model, 2, 1, "beat v1 on macro-F1 by 0.031")
    moved_at = datetime.fromisoformat(xgboost.since)
    assert abs((datetime.now(moved_at.tzinfo) - moved_at).total_seconds()) < 600
    assert xgboost.describe() == (f"v2 since {moved_at:%Y-%m-%d %H:%M} UTC, replacing v1: "
                                  "beat v1 on macro-F1 by 0.031")
    # staging is not production: bert has no production version yet
    assert (bert.version, bert.replaced, bert.describe()) == (
        None, None, "no version holds production yet")

    table = [re.split(r"\s{2,}", line) for line in
             format_production([xgboost, bert]).splitlines()]
    assert table[0] == ["in production", "version", "since", "replaced", "why"]
    assert table[2] == [model, "v2", f"{moved_at:%Y-%m-%d %H:%M} UTC", "v1",
                        "beat v1 on macro-F1 by 0.031"]
    assert table[3] == ["trending-now-bert", "-", "-", "-", "no version holds production yet"]


def test_a_first_champion_replaced_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(LocalArtifactStore(tmp_path))
    registry.register("trending-now-bert", _save("b"), {"run_id": "r"}, ["production"],
                      "first champion")
    row = production_rows(registry)[1]
    assert (row.version, row.replaced) == (1, None)
    assert row.describe().startswith("v1 since ") and row.describe().endswith(": first champion")
    assert "replacing" not in row.describe()
