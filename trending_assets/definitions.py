"""The code location: one Definitions object; resources and executor chosen by APP_ENV."""

from dagster import AssetsDefinition, Definitions, ExecutorDefinition, multiprocess_executor

from resources.tracking import WandbTracker
from trending_assets.assets.evaluation import evaluation_assets
from trending_assets.assets.features import data_splits, tfidf_features
from trending_assets.assets.ingestion import raw_titles, training_data
from trending_assets.assets.registry import registration_assets
from trending_assets.assets.training import training_assets
from trending_assets.assets.tuning import xgboost_hyperparameters
from trending_assets.automation.jobs import ingest_job, training_job, tuning_job
from trending_assets.automation.wiring import automation_resources, build_automation
from trending_assets.k8s import executor_config, step_op_tags
from trending_assets.settings import Settings, SettingsResource, load_settings
from trending_assets.storage_resources import storage_resources


def all_assets(bert_op_tags: dict | None = None) -> list[AssetsDefinition]:
    """The graph: data and features, then per model family (ml/families.py) its training,
    evaluation and registration assets; `bert_op_tags` carry bert_model's pod."""
    return [raw_titles, training_data, data_splits, tfidf_features,
            *training_assets(bert_op_tags), xgboost_hyperparameters,
            *evaluation_assets(), *registration_assets()]


ASSETS = all_assets()


def build_resources(settings: Settings, overrides: str = "{}") -> dict[str, object]:
    """Resources for the environment; `overrides` (JSON) adjusts settings, e.g. in tests."""
    stores = storage_resources(settings)  # io_manager, landing, registry, ...
    return {
        "settings": SettingsResource(env=settings.environment, config_dir=settings.config_dir,
                                     overrides_json=overrides, snapshots=stores.artifacts),
        **stores.by_key(),
        "tracker": WandbTracker(
            mode=settings.tracking.mode, project=settings.tracking.project,
            entity=settings.tracking.entity, dir=settings.tracking.dir),
        # `notifier`: alert channels from `alerts:` in configs/ (Slack, webhook, log); forced
        # promotions (registration assets) and the alert sensors send through it.
        # `retrain_requests`: where the retrain_requests sensor reads requests.
        **automation_resources(settings),
    }


def build_executor(settings: Settings) -> ExecutorDefinition | None:
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor  # only the cluster image needs it loaded

        # One pod per step, each sized from `k8s:` in configs/ (see trending_assets/k8s.py).
        step_names = [a.node_def.name for a in ASSETS]
        return k8s_job_executor.configured(executor_config(settings.k8s, step_names))
    if settings.executor == "in_process":
        from dagster import in_process_executor

        return in_process_executor
    # Two cores here: more parallel steps would only fight over them.
    return multiprocess_executor.configured({"max_concurrent": 2})


def build_assets(settings: Settings) -> list[AssetsDefinition]:
    """ASSETS with this environment's GPU step tags (the GPU limit, node pool and /dev/shm
    of `k8s.steps.bert_model`) on bert_model."""
    return all_assets(step_op_tags(settings.k8s, "bert_model"))


def build_definitions(settings: Settings, overrides: str = "{}") -> Definitions:
    # Sensors, schedules, automation conditions and freshness policies from `automation:`.
    automation = build_automation(build_assets(settings), settings)
    return Definitions(
        assets=automation.assets,
        jobs=[ingest_job, training_job, tuning_job],
        sensors=automation.sensors,
        schedules=automation.schedules,
        resources=build_resources(settings, overrides),
        executor=build_executor(settings),
    )


defs = build_definitions(load_settings())


# Module-level factories so `dagster.reconstructable` can rebuild the jobs in step processes.
def ingest_job_def():
    return defs.resolve_job_def(ingest_job.name)


def training_job_def():
    return defs.resolve_job_def(training_job.name)
