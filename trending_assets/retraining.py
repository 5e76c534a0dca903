"""Whether `cli run` retrains: decided from what changed, never from how the last run ended.

A training run started by the CLI carries, as run tags, the fingerprint of what it trained
on: the accepted data (every landing batch's accepted version), each asset's code version
and the effective configuration (settings and taxonomy). The next `cli run` compares the
fingerprint it would train on with the one of the last completed training run, and says
which part changed. A run whose gate refused a model completed: it is not retrained. A run
that crashed is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    RunsFilter,
)

from trending_assets.settings import Settings, load_taxonomy_config

DATA_TAG = "trending/accepted_data"
CODE_TAG = "trending/code_versions"
CONFIG_TAG = "trending/config_hash"
RAW_TITLES = AssetKey("raw_titles")
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
# Successful runs looked at for a recorded fingerprint (runs launched elsewhere, by a
# sensor or the UI, carry none).
SEARCHED_RUNS = 50


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Fingerprint:
    """What a training run trains on."""

    accepted_data: str  # digest of {landing file: data version of its accepted batch}
    code_versions: dict[str, str]  # asset -> code version
    config_hash: str  # settings fingerprint and taxonomy

    def tags(self) -> dict[str, str]:
        return {DATA_TAG: self.accepted_data,
                CODE_TAG: json.dumps(self.code_versions, sort_keys=True),
                CONFIG_TAG: self.config_hash}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Fingerprint | None:
        if not all(tag in tags for tag in (DATA_TAG, CODE_TAG, CONFIG_TAG)):
            return None
        return cls(tags[DATA_TAG], json.loads(tags[CODE_TAG]), tags[CONFIG_TAG])

    def changes_since(self, before: Fingerprint) -> list[str]:
        """One line per changed part, naming old and new values."""
        changes = []
        if self.accepted_data != before.accepted_data:
            changes.append(f"accepted data {before.accepted_data} -> {self.accepted_data}")
        code = {asset: (before.code_versions.get(asset), version)
                for asset, version in sorted(self.code_versions.items())
                if before.code_versions.get(asset) != version}
        if code:
            changes.append("code version " + ", ".join(
                f"{asset} {old or 'new'} -> {new}" for asset, (old, new) in code.items()))
        if self.config_hash != before.config_hash:
            changes.append(f"configuration {before.config_hash} -> {self.config_hash}")
        return changes


def accepted_batches(instance: DagsterInstance) -> dict[str, str]:
    """Landing file -> data version of its latest accepted (not quarantined) ingestion."""
    accepted: dict[str, str] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=RAW_TITLES), limit=500, cursor=cursor, ascending=True)
        for record in page.records:
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            quarantined = meta.get("quarantined")
            if record.partition_key and "data_version" in meta and not (
                    quarantined is not None and quarantined.value):
                accepted[record.partition_key] = str(meta["data_version"].value)
        if not page.has_more:
            return accepted
        cursor = page.cursor


def current_fingerprint(instance: DagsterInstance, job: JobDefinition,
                        settings: Settings) -> Fingerprint:
    graph = job.asset_layer.asset_graph
    code_versions = {key.to_user_string(): graph.get(key).code_version or ""
                     for key in job.asset_layer.executable_asset_keys}
    config = _digest([settings.fingerprint(), load_taxonomy_config(settings)])
    return Fingerprint(_digest(accepted_batches(instance)), code_versions, config)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def decide_retrain(instance: DagsterInstance, job_name: str, current: Fingerprint,
                   force: bool) -> RetrainDecision:
    if force:
        return RetrainDecision(True, "--force: retraining")
    finished = instance.get_runs(RunsFilter(job_name=job_name, statuses=FINISHED), limit=1)
    if finished and finished[0].status != DagsterRunStatus.SUCCESS:
        run = finished[0]
        return RetrainDecision(True, f"the last training run {run.run_id} ended "
                                     f"{run.status.value} (it did not complete; a refused "
                                     "model completes): training again")
    for run in instance.get_runs(RunsFilter(job_name=job_name,
                                            statuses=[DagsterRunStatus.SUCCESS]),
                                 limit=SEARCHED_RUNS):
        before = Fingerprint.from_tags(run.tags)
        if before is None:
            continue
        changes = current.changes_since(before)
        if changes:
            return RetrainDecision(True, f"changed since the last completed training run "
                                         f"{run.run_id}: {'; '.join(changes)}")
        return RetrainDecision(False, (
            f"nothing changed since the last completed training run {run.run_id} (accepted "
            f"data {current.accepted_data}, code versions, configuration "
            f"{current.config_hash}): nothing to retrain (use --force to retrain anyway)"))
    return RetrainDecision(True, "no completed training run recorded what it trained on: "
                                 "training")
