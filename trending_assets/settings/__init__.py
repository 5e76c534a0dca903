"""Configuration: `configs/base.yaml` + one overlay per environment, validated by pydantic.

Split by domain: `base` (the strict base, paths, ranges), `data` (storage, tracking, data
gates), `gates` (registration gates, registry), `automation` (sensors, schedules,
alerts), `k8s` (pods), `schema` (`Settings`, composing them with the ml/ parameter
schemas), `loading` (files, environment variables, snapshots) and `resource` (the Dagster
resource). Every public name is importable from `trending_assets.settings`.
"""

from trending_assets.ml.bert.params import BertParams
from trending_assets.ml.config import deep_merge
from trending_assets.ml.limits import LandingLimits
from trending_assets.ml.linear import LinearParams
from trending_assets.ml.tfidf import TfidfParams
from trending_assets.ml.xgboost_model import XGBoostParams
from trending_assets.settings.automation import (
    CHANNEL_SCHEMES,
    AlertChannel,
    AlertSettings,
    AutomationSettings,
    FreshnessWindow,
    LandingSensorSettings,
    RetrainRequestSettings,
    RetrainSettings,
    channel_url_problem,
)
from trending_assets.settings.base import (
    BUNDLED,
    BUNDLED_OOD_FILE,
    ENVIRONMENTS,
    REPO_ROOT,
    ConfigError,
    FloatRange,
    IntRange,
)
from trending_assets.settings.data import (
    BatchGateSettings,
    DataSettings,
    DriftLevels,
    DriftSettings,
    SplitSettings,
    StorageSettings,
    TitleBounds,
    TrackingSettings,
)
from trending_assets.settings.gates import (
    GATE_METRICS,
    ChangeThreshold,
    GateSettings,
    GatesSettings,
    GenreFloor,
    ModelCardText,
    RegistrySettings,
    SliceGate,
)
from trending_assets.settings.k8s import (
    K8sSettings,
    NodePool,
    PodSize,
    StepPod,
    Toleration,
    quantity_value,
)
from trending_assets.settings.loading import (
    configuration_snapshot,
    dagster_home,
    load_settings,
    load_taxonomy_config,
    settings_from_snapshot,
)
from trending_assets.settings.resource import SettingsResource, _load_cached
from trending_assets.settings.schema import Settings

__all__ = [
    "BUNDLED", "BUNDLED_OOD_FILE", "CHANNEL_SCHEMES", "ENVIRONMENTS", "GATE_METRICS", "REPO_ROOT",
    "AlertChannel", "AlertSettings", "AutomationSettings", "BatchGateSettings", "BertParams",
    "ChangeThreshold", "ConfigError", "DataSettings", "DriftLevels", "DriftSettings",
    "FloatRange", "FreshnessWindow", "GateSettings", "GatesSettings", "GenreFloor", "IntRange",
    "K8sSettings", "LandingLimits", "LandingSensorSettings", "LinearParams", "ModelCardText",
    "NodePool", "PodSize", "RegistrySettings", "RetrainRequestSettings", "RetrainSettings",
    "Settings", "SettingsResource", "SliceGate", "SplitSettings", "StepPod", "StorageSettings",
    "TfidfParams", "TitleBounds", "Toleration", "TrackingSettings", "XGBoostParams",
    "_load_cached", "channel_url_problem", "configuration_snapshot", "dagster_home",
    "deep_merge", "load_settings", "load_taxonomy_config", "quantity_value",
    "settings_from_snapshot",
]
