"""Weights & Biases tracking around `wandb` itself.

dagster-wandb cannot be used: 0.29.27 fails to import with wandb >= 0.30 and its I/O
manager needs the network. Offline mode (the local default) writes run folders that
`wandb sync <dir>/wandb/offline-run-*` uploads later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import wandb
from dagster import ConfigurableResource


class TrackedRun:
    """The parts of a wandb run the assets use."""

    def __init__(self, run: Any) -> None:
        self._run = run

    @property
    def path(self) -> str:
        """entity/project/run_id (entity is empty offline)."""
        return "/".join(p for p in (self._run.entity, self._run.project, self._run.id) if p)

    @property
    def folder(self) -> str:
        """The local run folder (what `wandb sync` uploads)."""
        return str(Path(self._run.dir).parent)

    def log(self, metrics: Mapping[str, Any]) -> None:
        self._run.log(dict(metrics))

    def summarize(self, values: Mapping[str, Any]) -> None:
        self._run.summary.update(dict(values))

    def log_artifact(
        self, directory: Path, name: str, kind: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        artifact = wandb.Artifact(name=name, type=kind, metadata=dict(metadata or {}))
        artifact.add_dir(str(directory))
        self._run.log_artifact(artifact)


class WandbTracker(ConfigurableResource):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "trending-now"
    entity: str | None = None
    dir: str = ".trending/wandb"

    @contextmanager
    def start_run(
        self, name: str, job_type: str, config: Mapping[str, Any], group: str | None = None,
        tags: list[str] | None = None,
    ) -> Iterator[TrackedRun]:
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=self.project, entity=self.entity, dir=self.dir, mode=self.mode,
            name=name, job_type=job_type, group=group, tags=tags, config=dict(config),
            reinit="create_new",
            # Console capture and system stats threads add noise to the Dagster step logs.
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        try:
            yield TrackedRun(run)
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()
