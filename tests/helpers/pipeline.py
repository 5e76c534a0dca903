"""Ingest landing files and train through the real assets and jobs, on a test instance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from dagster import AssetKey, AssetSelection, DagsterInstance, instance_for_test, materialize

from resources.registry import ModelRegistry
from resources.storage import LocalArtifactStore
from tests.conftest import write_test_configs
from trending_assets.definitions import ASSETS, build_definitions, build_resources
from trending_assets.settings import Settings, load_settings


def ingest(defs, instance: DagsterInstance, store, names: list[str]) -> dict[str, object]:
    checks = {}
    for name in names:
        if not instance.has_dynamic_partition("landing_files", name):
            instance.add_dynamic_partitions("landing_files", [name])
        result = defs.resolve_job_def("ingest_landing_file").execute_in_process(
            instance=instance, partition_key=name, raise_on_error=False)
        assert result.success, name  # a bad file never fails its run
        (check,) = result.get_asset_check_evaluations()
        checks[name] = check
    return checks


TRAINING = (AssetSelection.assets("registered_xgboost_model").upstream()
            - AssetSelection.assets("raw_titles"))
DATA_ONLY = AssetSelection.assets("training_data")


def local_pipeline(tmp_path: Path, tiny_bert_dir: Path):
    """A local root with an empty landing folder, its test configuration, the settings and
    the Definitions built from them."""
    root = tmp_path / "root"
    (root / "landing").mkdir(parents=True)
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir)
    settings = load_settings("local", config_dir)
    return root, settings, build_definitions(settings)


def train(settings: Settings, instance: DagsterInstance, selection=TRAINING,
          overrides: dict | None = None):
    return materialize(ASSETS, selection=selection, instance=instance, raise_on_error=False,
                       resources=build_resources(settings, json.dumps(overrides or {})))


def stored_table(root: Path, run_id: str) -> pd.DataFrame:
    return pd.read_parquet(root / "artifacts" / "assets" / "training_data" / run_id
                           / "table.parquet")


# Both families become champion on the first run (the shipped base waits for a person).
# Small random samples: more titles without a canonical genre than the data gate allows, and
# a second batch of 150 titles drifts from the first 400 by chance. Data gates are not under
# test here.
GOVERNANCE_CONFIG = {
    "gates": {f: {"first_run_promote_to": "production"} for f in ("xgboost", "bert")},
    "registry": {"backend": "wandb"},  # offline here: links are recorded as pending
    "data": {"max_no_genre_share": 0.5, "drift": {
        name: {"warn": 1.0, "error": 10.0}
        for name in ("genre_psi", "length_psi", "vocabulary_novelty")}},
}


class Pipeline:
    """A test instance with the Definitions of `settings`: ingest landing files, train."""

    def __init__(self, instance: DagsterInstance, settings: Settings, landing: Path) -> None:
        self.instance, self.settings, self.landing = instance, settings, landing
        self.registry = ModelRegistry(LocalArtifactStore(settings.storage.root))
        self.first_run = None  # the result of the first training run, set by first_run()

    def ingest(self, files: list[str]) -> None:
        defs = build_definitions(self.settings)
        self.instance.add_dynamic_partitions("landing_files", files)
        for name in files:
            assert defs.resolve_job_def("ingest_landing_file").execute_in_process(
                instance=self.instance, partition_key=name).success

    def train(self, assets: list[str] | None = None, overrides: dict | None = None,
              run_config: dict | None = None):
        defs = build_definitions(self.settings, json.dumps(overrides or {}))
        return defs.resolve_job_def("train_models").execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=run_config,
            asset_selection=None if assets is None else [AssetKey(a) for a in assets])


@contextmanager
def first_run(root: Path, tiny_bert_dir: Path, batches: dict[str, pd.DataFrame],
              config: dict, assets: list[str] | None = None) -> Iterator[Pipeline]:
    """Land `batches` under `root`, ingest the first and train `assets` (default: the whole
    graph) on it, on a fresh test instance; `first_run` holds that training run's result."""
    landing = root / "landing"
    landing.mkdir(parents=True)
    for name, frame in batches.items():
        frame.to_csv(landing / name, index=False)
    config_dir = write_test_configs(root / "configs", root, tiny_bert_dir, config)
    with instance_for_test() as instance:
        run = Pipeline(instance, load_settings("local", config_dir), landing)
        run.ingest([next(iter(batches))])
        run.first_run = run.train(assets)
        assert run.first_run.success
        yield run
