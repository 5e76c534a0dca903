"""The project's Helm values files, merged the way Helm merges `-f` files (no chart needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO
from trending_assets.settings import deep_merge

HELM = REPO / "helm"


def load_values(name: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(HELM / name).read_text()) or {}


def helm_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a later -f file over an earlier one (pkg/cli/values mergeMaps): maps
    merge key by key, anything else (lists included) is replaced whole: the settings' merge.
    A null is kept: when the chart's defaults are coalesced under these values, a null
    deletes the key."""
    return deep_merge(base, overlay)


def user_values(env: str, *extra_files: Path) -> dict[str, Any]:
    """`-f helm/values.yaml -f helm/values-<env>.yaml [-f extra ...]`, as Helm receives them
    (the engine coalesces them over the chart's own values when it validates and renders)."""
    values: dict[str, Any] = {}
    for name in ("values.yaml", f"values-{env}.yaml", *extra_files):
        values = helm_merge(values, load_values(name))
    return values


def without_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_nulls(v) for k, v in node.items() if v is not None}
    return node


def chart_values(env: str) -> dict[str, Any]:
    """The values our files set for an environment, merged as Helm merges them, with nulls
    (which delete a key) applied. The chart's own defaults are not included."""
    return without_nulls(user_values(env))
