"""Shared fixtures: a small real sample, a tiny random BERT, an isolated configuration."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetsDefinition, asset

from tests.helpers import REPO
from tests.helpers.alerts import AlertReceiver
from trending_assets.ml import families
from trending_assets.ml.dataset import TitleSplits, assign_splits, build_training_table
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.rehearsal.stack import write_tiny_bert

E2E = Path(__file__).resolve().parent / "e2e"
NETFLIX = REPO / "trending_assets" / "data" / "netflix_titles_genres.csv.gz"

# Libraries that would otherwise phone home or print progress bars.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The folder is the layer: everything under tests/e2e is `e2e`, so `-m "not e2e"` and
    `make test-fast` select by layer. A `gpu` test is skipped where torch sees no CUDA device."""
    cuda = None
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("gpu"):
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="no CUDA device"))


@pytest.fixture(scope="session")
def netflix() -> pd.DataFrame:
    return pd.read_csv(NETFLIX, keep_default_na=False)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT with the bundled MiniLM tokenizer."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def title_splits(titles: pd.DataFrame, val_fraction: float, test_fraction: float,
                 salt: str) -> TitleSplits:
    """Real titles mapped through the repository's taxonomy and split by id hash."""
    taxonomy = Taxonomy.from_config(yaml.safe_load((REPO / "configs/genres.yaml").read_text()))
    table, genres, _ = build_training_table([titles], taxonomy)
    return TitleSplits(assign_splits(table, val_fraction, test_fraction, salt), genres)


def splits_asset(splits: TitleSplits) -> AssetsDefinition:
    """A `data_splits` asset returning `splits`: trains a model asset without the ingestion
    part of the graph."""
    @asset(name="data_splits")
    def fixed_splits() -> TitleSplits:
        return splits

    return fixed_splits


def write_test_configs(folder: Path, root: Path, tiny_bert_dir: Path,
                       extra: dict | None = None) -> Path:
    """configs/ copied to `folder` with a local overlay sized for tests."""
    shutil.copytree(REPO / "configs", folder, dirs_exist_ok=True)
    overlay = {
        "environment": "local",
        "executor": "in_process",
        "storage": {"root": str(root / "artifacts"), "landing": str(root / "landing"),
                    "seed_sample": False},
        "tracking": {"mode": "offline", "dir": str(root / "wandb")},
        "data": {"min_rows": 100, "ood_max_rows": 300},
        "xgboost": {"n_estimators": 30, "k_best_features": 500},
        "bert": {"model_path": str(tiny_bert_dir), "epochs": 1, "batch_size": 16},
        # Tiny models on 800 titles: every value floor off (slices and genres too).
        "gates": {f: {"min_macro_f1": 0.0, "min_micro_f1": 0.0, "genre_floor": None,
                      "slices": []}
                  for f in families.names()},
    }
    if extra:
        from trending_assets.settings import deep_merge

        overlay = deep_merge(overlay, extra)
    (folder / "local.yaml").write_text(yaml.safe_dump(overlay))
    return folder


@pytest.fixture
def pipeline_env(tmp_path: Path, tiny_bert_dir: Path, netflix: pd.DataFrame) -> dict[str, Path]:
    """An isolated root with one landing file of 800 real titles and a test configuration."""
    root = tmp_path / "root"
    (root / "landing").mkdir(parents=True)
    netflix.sample(800, random_state=0).to_csv(root / "landing" / "batch-001.csv", index=False)
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir)
    return {"root": root, "config_dir": config_dir, "landing": root / "landing"}


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path,
               netflix: pd.DataFrame):
    """A real dagster-webserver on a loopback port with a test instance and two landing
    files, shared by the browser and GraphQL tests (see tests/helpers/dagster_ui.py)."""
    from tests.helpers.dagster_ui import prepared_ui

    with prepared_ui(tmp_path_factory.mktemp("dagster_ui"), tiny_bert_dir, netflix) as ui:
        yield ui


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    """A webhook endpoint on loopback that records the alerts it is sent."""
    server = AlertReceiver()
    yield server
    server.close()
