"""`Settings`: every domain's model composed, as one validated configuration."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, PrivateAttr, create_model, model_validator

from trending_assets.ml import families
from trending_assets.ml.tfidf import TfidfParams
from trending_assets.settings.automation import AlertSettings, AutomationSettings
from trending_assets.settings.base import _Strict
from trending_assets.settings.data import DataSettings, StorageSettings, TrackingSettings
from trending_assets.settings.gates import GatesSettings, RegistrySettings
from trending_assets.settings.k8s import K8sSettings


class SettingsBase(_Strict):
    """Every section but the model parameters, which `Settings` adds from the registry."""

    environment: Literal["local", "staging", "production"]
    code_version: str | None = Field(
        None, description="git commit of the code; found with git when empty"
    )
    storage: StorageSettings
    tracking: TrackingSettings
    executor: Literal["multiprocess", "in_process", "k8s"] = "multiprocess"
    data: DataSettings
    gates: GatesSettings
    registry: RegistrySettings = RegistrySettings()
    automation: AutomationSettings = AutomationSettings()
    alerts: AlertSettings = AlertSettings()
    k8s: K8sSettings = K8sSettings()
    config_dir: str = Field(description="folder the YAML files were read from (set by the loader)")
    # The taxonomy of a run's configuration snapshot (settings_from_snapshot); None: read the file.
    _taxonomy: dict[str, Any] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _split_leaves_training_data(self) -> SettingsBase:
        if self.data.split.val_fraction + self.data.split.test_fraction >= 0.6:
            raise ValueError("data.split: val_fraction + test_fraction must stay below 0.6")
        return self

    @model_validator(mode="after")
    def _gpu_settings_match_pods(self) -> SettingsBase:
        if self.executor != "k8s":
            return self
        xgboost_gpus = self.k8s.steps.get("xgboost_model", self.k8s.default_step).gpus
        if self.xgboost.device.startswith("cuda") and xgboost_gpus == 0:
            raise ValueError(f"xgboost.device is {self.xgboost.device!r} but "
                             "k8s.steps.xgboost_model.gpus is 0: give the step a GPU or use cpu")
        # torchrun starts bert.processes workers, one per GPU of the pod: the two must agree.
        bert_gpus = self.k8s.steps.get("bert_model", self.k8s.default_step).gpus
        if bert_gpus and (bert_gpus > 1 or self.bert.processes > 1) \
                and self.bert.processes != bert_gpus:
            raise ValueError(
                f"bert.processes ({self.bert.processes}) must equal k8s.steps.bert_model.gpus "
                f"({bert_gpus}): torchrun runs one worker per GPU of the pod; set both to the "
                "same count")
        return self

    def fingerprint(self) -> str:
        """sha256 of the validated configuration, recorded with every artifact.

        Where the files were read from and the code version are recorded separately, so
        they are left out: the same configuration gives the same hash in any checkout."""
        # Automation and alerts decide when and who hears, and k8s which pod runs a step,
        # never what an artifact holds.
        values = self.model_dump(mode="json", exclude={"config_dir", "code_version",
                                                      "automation", "alerts", "k8s"})
        blob = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# The parameter sections are the ml/ schemas themselves (base.yaml holds their values):
# TF-IDF and one per model family, as the registry lists them.
_SECTIONS: dict[str, Any] = {"tfidf": (TfidfParams, ...)} | {
    f.section: (f.params_type, ...) for f in families.FAMILIES.values()}
Settings = create_model("Settings", __base__=SettingsBase, __module__=__name__, **_SECTIONS)
