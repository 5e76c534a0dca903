"""The settings as a Dagster resource, resolved once per run."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from resources.storage import ArtifactStoreResource
from trending_assets.ml.config import ConfigError
from trending_assets.settings.loading import (
    configuration_snapshot,
    load_settings,
    load_taxonomy_config,
    settings_from_snapshot,
)
from trending_assets.settings.schema import Settings


class SettingsResource(ConfigurableResource):
    """Validated settings for assets and checks; `overrides_json` adjusts a single run.

    Inside a run with `snapshots` set, the configuration is resolved once per run: the run's
    first step stores it under runs/<run id>/configuration.json and every step of the run
    (each its own process with the multiprocess and Kubernetes executors) reads that
    snapshot, so a file edited while the run goes on never splits it in two configurations.
    """

    env: str | None = None
    config_dir: str | None = None
    overrides_json: str = "{}"
    snapshots: ArtifactStoreResource | None = None  # where each run's snapshot is kept
    _run_id: str | None = PrivateAttr(None)
    _run_settings: Settings | None = PrivateAttr(None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._run_id = None if context.run is None else context.run.run_id

    def _overrides(self) -> dict[str, Any]:
        try:
            return json.loads(self.overrides_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"settings resource: overrides_json is not JSON: {exc}") from exc

    def get(self) -> Settings:
        if self._run_id is None or self.snapshots is None:
            return _load_cached(self.env, self.config_dir,
                                json.dumps(self._overrides(), sort_keys=True))
        if self._run_settings is None:
            self._run_settings = self._run_snapshot(self._run_id)
        return self._run_settings

    def _run_snapshot(self, run_id: str) -> Settings:
        store = self.snapshots.open()
        key = f"runs/{run_id}/configuration.json"
        if not store.exists(key):
            blob = json.dumps(configuration_snapshot(self.env, self.config_dir,
                                                     self._overrides()), sort_keys=True)
            # Steps running in parallel may both get here: the first write wins for all.
            store.put_if_absent(key, blob.encode())
        return settings_from_snapshot(json.loads(store.get_bytes(key)), store.uri_of(key))

    def taxonomy(self) -> dict[str, Any]:
        return load_taxonomy_config(self.get())


@lru_cache(maxsize=8)
def _load_cached(env: str | None, config_dir: str | None, overrides: str) -> Settings:
    return load_settings(env, config_dir, json.loads(overrides))
