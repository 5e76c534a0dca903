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

    def log_images(self, images: Mapping[str, Path]) -> None:
        """PNG files as W&B images (the run's media panel), one key each."""
        self._run.log({key: wandb.Image(str(path)) for key, path in images.items()})

    def log_table(self, key: str, rows: list[Mapping[str, Any]]) -> None:
        """Rows of the same keys as a W&B table (columns in the first row's order)."""
        columns = list(rows[0]) if rows else []
        self._run.log({key: wandb.Table(columns=columns,
                                        data=[[row[c] for c in columns] for row in rows])})

    def log_artifact(
        self, directory: Path, name: str, kind: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        artifact = wandb.Artifact(name=name, type=kind, metadata=dict(metadata or {}))
        artifact.add_dir(str(directory))
        self._run.log_artifact(artifact)

    def register_model_version(
        self, directory: Path, model: str, version: int, target: str, aliases: list[str],
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Log a registry version's files as a model artifact and link it into the W&B
        registry collection `target` with `aliases`; returns the link record.

        Offline (wandb 0.31 raises NotImplementedError for links) the artifact is logged
        with a unique alias and the record says "pending": after `wandb sync`,
        `complete_link` finds it by that alias and links it."""
        artifact = wandb.Artifact(name=model, type="model", metadata=dict(metadata))
        artifact.add_dir(str(directory))
        self._run.log_artifact(artifact, aliases=[registry_version_alias(version)])
        link = {"artifact": f"{model}:{registry_version_alias(version)}", "target": target,
                "aliases": list(aliases), "run": self.path, "project": self._run.project}
        if self._run.offline:
            return {**link, "status": "pending"}
        self._run.link_artifact(artifact, target_path=target, aliases=list(aliases))
        return {**link, "status": "linked", "entity": self._run.entity}


def registry_target(registry: str, collection: str) -> str:
    """A W&B registry collection path: wandb-registry-<registry>/<collection>."""
    return f"wandb-registry-{registry}/{collection}"


def registry_version_alias(version: int) -> str:
    """The artifact alias that finds a registry version's upload after `wandb sync`."""
    return f"registry-v{version:04d}"


def complete_link(api: Any, entity: str, pending: Mapping[str, Any], aliases: list[str]
                  ) -> dict[str, Any]:
    """Link a synced artifact (found by its registry-version alias) into its collection.

    `api` is a `wandb.Api()`; `aliases` are the ones the registry gives that version now
    (they may have moved since it was registered)."""
    name = f"{entity}/{pending['project']}/{pending['artifact']}"
    artifact = api.artifact(name, type="model")
    artifact.link(pending["target"], aliases=list(aliases))
    return {**pending, "status": "linked", "entity": entity, "aliases": list(aliases)}


class WandbTracker(ConfigurableResource):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "trending-now"
    entity: str | None = None
    dir: str = ".trending/wandb"

    @contextmanager
    def start_run(
        self, name: str, job_type: str, config: Mapping[str, Any], group: str | None = None,
        tags: list[str] | None = None, run_id: str | None = None,
    ) -> Iterator[TrackedRun]:
        """A W&B run; with `run_id`, the run of that id continues if it exists (a retried
        step resumes its run online; offline, the attempts' folders share the id and
        `wandb sync` uploads them into that one run, in start order)."""
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=self.project, entity=self.entity, dir=self.dir, mode=self.mode,
            name=name, job_type=job_type, group=group, tags=tags, config=dict(config),
            reinit="create_new", id=run_id, resume="allow" if run_id else None,
            # Console capture and system stats threads add noise to the Dagster step logs.
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        try:
            yield TrackedRun(run)
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()
