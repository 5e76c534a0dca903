"""The bert_model asset: a failed attempt (a preempted pod) is retried by its RetryPolicy and
the retry resumes from the checkpoint the first attempt stored under the same run id, and
logs into the same W&B run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, instance_for_test, materialize, mem_io_manager

from resources.storage import ArtifactStoreResource
from resources.tracking import WandbTracker
from tests.conftest import splits_asset, title_splits, write_test_configs
from trending_assets.assets.training import bert_model
from trending_assets.settings import SettingsResource, load_settings

pytestmark = pytest.mark.e2e  # a preempted and retried BERT step: too slow for make test-fast

PREEMPT_AT_STEP = 20


class PreemptedOnceTracker(WandbTracker):
    """Real offline W&B runs; the first attempt dies at step PREEMPT_AT_STEP, as a pod would
    when its node is reclaimed (the marker file makes it happen once)."""

    marker: str

    @contextmanager
    def start_run(self, *args, **kwargs) -> Iterator:
        with super().start_run(*args, **kwargs) as run:
            original = run.log

            def log(metrics):
                if metrics.get("step") == PREEMPT_AT_STEP and not Path(self.marker).exists():
                    Path(self.marker).touch()
                    raise RuntimeError("node preempted")
                original(metrics)

            run.log = log
            yield run


def test_retry_resumes_from_the_run_checkpoint(tmp_path: Path, tiny_bert_dir: Path,
                                               netflix: pd.DataFrame) -> None:
    root = tmp_path / "root"
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir, extra={
        "bert": {"epochs": 1, "batch_size": 8, "checkpoint_every_steps": 6,
                 "log_every_steps": 10}})
    settings = load_settings("local", config_dir)
    splits = title_splits(netflix.sample(600, random_state=2), 0.1, 0.1, "asset-test")
    with instance_for_test() as instance:
        result = materialize(
            [splits_asset(splits), bert_model], instance=instance, resources={
                "io_manager": mem_io_manager,
                "settings": SettingsResource(env="local", config_dir=str(config_dir)),
                "artifacts": ArtifactStoreResource(uri=str(root / "artifacts")),
                "tracker": PreemptedOnceTracker(mode="offline", dir=str(root / "wandb"),
                                                marker=str(tmp_path / "preempted")),
            })
        assert result.success
        events = result.all_events
        retries = [e for e in events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
        metadata = result.asset_materializations_for_node("bert_model")[0].metadata
        assert len(retries) == 1
        # The first attempt reached step 20; its newest checkpoint was step 18.
        assert metadata["resumed_from_step"].value == 18
        assert metadata["optimizer_steps"].value > PREEMPT_AT_STEP
        assert metadata["processes"].value == 1
        assert metadata["train_samples_per_s"].value > 0
        run_id = result.run_id
        assert metadata["checkpoints"].value.endswith(f"checkpoints/bert/{run_id}")
        stored = Path(settings.storage.root) / "checkpoints" / "bert" / run_id
        assert sorted(p.name for p in stored.iterdir()) == ["slot-0", "slot-1"]
        # Once the model is stored, the checkpoints are emptied: a few bytes stay behind.
        files = [p for p in stored.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"manifest.json", "model.safetensors", "training.pt"}
        assert all(p.stat().st_size < 100 for p in files)
        logs = [e.message for e in instance.all_logs(run_id) if e.message]
        assert any("resumed_from_step=18" in m for m in logs)
        # Both attempts logged into one W&B run, whose id the Dagster run fixes: two offline
        # folders of the same id, which `wandb sync` uploads as one run.
        assert metadata["wandb_run"].value == f"trending-now/bert-{run_id}"
        assert metadata["started_in_tracker_run"].value == metadata["wandb_run"].value
        attempts = sorted((root / "wandb" / "wandb").glob(f"offline-run-*-bert-{run_id}"))
        assert len(attempts) == 2
