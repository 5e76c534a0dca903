"""What is in production: per registered family, the version holding the production alias,
since when, why it was put there, and the version it replaced (from the registry's alias
log, so `cli summary`, `cli run` and the registration assets all say the same)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from resources.registry import CHAMPION_ALIAS, ModelRegistry
from trending_assets.ml import families


@dataclass(frozen=True)
class ProductionRow:
    family: str
    model: str
    version: int | None  # None: no version holds production yet
    since: str | None  # ISO time of the alias move
    reason: str
    replaced: int | None

    @property
    def since_minutes(self) -> str:
        """The move's time to the minute, e.g. `2026-12-02 14:03 UTC`; `-` when unset."""
        if self.since is None:
            return "-"
        return datetime.fromisoformat(self.since).strftime("%Y-%m-%d %H:%M %Z").strip()

    def describe(self) -> str:
        """One line for people, e.g. `v3 since 2026-12-02 14:03 UTC, replacing v2: <why>`."""
        if self.version is None:
            return self.reason
        replaced = f", replacing v{self.replaced}" if self.replaced is not None else ""
        return f"v{self.version} since {self.since_minutes}{replaced}: {self.reason}"


def production_row(registry: ModelRegistry, family: str) -> ProductionRow:
    model = families.registry_model_name(family)
    move = registry.alias_holder(model, CHAMPION_ALIAS)
    if move is None:
        return ProductionRow(family, model, None, None, "no version holds production yet",
                             None)
    return ProductionRow(family, model, move["version"], move["at"], move["reason"],
                         move["previous"])


def production_rows(registry: ModelRegistry) -> list[ProductionRow]:
    """One row per registered family, in registry order."""
    return [production_row(registry, family) for family in families.registered_names()]

