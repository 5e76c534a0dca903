"""Registration assets: every candidate that passed its value gate becomes an immutable
registry version with its blessing (the champion/challenger decision and why), a model card
and a reproducibility manifest; aliases move only as the blessing says. A candidate below
its value gate is refused here: the asset still materializes, as a "refused" record with
every failed criterion and the champion, and nothing is stored for it in the registry.

The decision and what a version stores live in trending_assets/governance.py
(`register_candidate`); the asset reads run config and resources, sends the override alert,
mirrors the version into the W&B registry and reports."""

import tempfile
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from resources.io_manager import StoredAssetsResource
from resources.notify import NotifierResource
from resources.registry import ModelRegistry, ModelRegistryResource
from resources.tracking import WandbTracker
from trending_assets.assets import ML_OWNERS
from trending_assets.governance import (
    SPLITS_ASSET,
    Candidate,
    override_alert,
    refusal_key,
    register_candidate,
)
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml import families
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.gate import Blessing, Override
from trending_assets.ml.report import EvaluationResult
from trending_assets.production import production_row
from trending_assets.settings import SettingsResource

# Bump when what the assets compute changes (see trending_assets/assets/__init__.py).
REGISTRATION_CODE_VERSION = "3"


class PromotionConfig(Config):
    """Run config of a registration: an audited override that forces promotion."""

    force_promotion: bool = Field(
        False, description="promote even if the blessing refuses; needs reason and author")
    reason: str = Field("", description="why this model must ship despite its gate")
    author: str = Field("", description="who takes the decision")


def upstream_record(context: AssetExecutionContext, stored_assets: StoredAssetsResource,
                    asset_name: str) -> dict[str, Any]:
    """URI, content hash and W&B run of the stored upstream version this run consumed: the
    one the IO manager loaded for it (pinned_record), not whatever another run wrote last."""
    key = AssetKey(asset_name)
    record = stored_assets.pinned_record(key)
    # None: no version of it was stored by the IO manager (a test's in-memory one, say).
    event = record.event_log_entry if record is not None else \
        context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    meta = event.asset_materialization.metadata
    return {key: meta[key].value for key in ("artifact_uri", "artifact_sha256", "wandb_run",
                                              "data_version", "dagster_run_id") if key in meta}


def registered_model_asset(family: str, model_type: type) -> AssetsDefinition:
    model_name = families.registry_model_name(family)
    asset_name = f"registered_{family}_model"

    @asset(
        name=asset_name, group_name="registry", kinds={"wandb"},
        owners=ML_OWNERS, code_version=REGISTRATION_CODE_VERSION,
        ins={"model": AssetIn(f"{family}_model"),
             "evaluation": AssetIn(f"{family}_evaluation"),
             "data_splits": AssetIn(SPLITS_ASSET)},
        description=f"{model_name}: a new immutable registry version (model files, decision "
                    "thresholds, metrics, blessing, model card, reproducibility manifest) "
                    "once the value gate passed; the blessing compares it with the production "
                    "champion on the same test rows and moves aliases only if it passes (or "
                    "an audited override forces it: run config force_promotion, reason, "
                    "author). Below the value gate: a 'refused' record, nothing registered.",
    )
    def _registered(
        context: AssetExecutionContext, config: PromotionConfig, settings: SettingsResource,
        registry: ModelRegistryResource, tracker: WandbTracker, notifier: NotifierResource,
        stored_assets: StoredAssetsResource,
        model: model_type, evaluation: EvaluationResult, data_splits: TitleSplits,
    ) -> MaterializeResult:
        # An incomplete override is refused before anything is stored.
        override = Override.requested(config.force_promotion, config.reason, config.author,
                                      model_name)
        settings_value = settings.get()
        store = registry.open()
        upstream = {name: upstream_record(context, stored_assets, name)
                    for name in (f"{family}_model", f"{family}_evaluation", SPLITS_ASSET)}
        fields = lineage(context, settings_value, table_version(data_splits.table))
        candidate = Candidate(model_name, family, model_type, model, evaluation, data_splits,
                              settings_value, fields, upstream)

        def alert(blessing: Blessing) -> None:
            notifier.send(override_alert(settings_value, blessing, asset_name,
                                         context.run.run_id))

        with measured() as figures:
            registered = register_candidate(store, candidate, override, on_override=alert)
            version, blessing, champion = (registered.version, registered.blessing,
                                           registered.champion)
            link = None
            if (version is not None and settings_value.registry.backend == "wandb"
                    and tracker.mode != "disabled"):
                link = _link_in_wandb(context, tracker, store, model_name, version,
                                      registered.wandb_target, blessing.aliases, fields)
        if version is None:
            context.log.warning(f"{model_name} refused, not registered: {blessing.summary}")
            stored: dict[str, Any] = {
                "registry_uri": store.store.uri_of(refusal_key(model_name, context.run.run_id))}
        else:
            context.log.info(f"{model_name} v{version}: {blessing.summary}")
            stored = {
                "registry_uri": store.store.uri_of(f"registry/{model_name}"),
                "model_card": MetadataValue.md(
                    store.document(model_name, version, "model_card.md").decode()),
                "wandb_registry_link": "not mirrored" if link is None else link["status"],
            }
        # What a person asks first leads (the UI lists metadata in this order): the
        # decision, the version, its aliases, why, and what is in production now.
        return MaterializeResult(metadata={
            "decision": blessing.decision,
            "version": version,
            "aliases": blessing.aliases,
            "reason": blessing.first_reason,
            "in_production": production_row(store, family).describe(),
            "model_name": model_name,
            "registered": version is not None,
            "failed_criteria": [c.name for c in blessing.failed],
            "blessing": MetadataValue.md(blessing.to_markdown()),
            "champion_version": None if champion is None else champion.version,
            "forced_by": None if not blessing.override else blessing.override["author"],
            # Rounded for people; the evaluation asset stores the full figures.
            "macro_f1": round(evaluation.macro_f1, 3),
            "micro_f1": round(evaluation.micro_f1, 3),
            **stored,
            "upstream": MetadataValue.json(upstream),
            **as_metadata(fields, figures),
        })

    return _registered


def _link_in_wandb(context: AssetExecutionContext, tracker: WandbTracker,
                   store: ModelRegistry, model_name: str, version: int, target: str,
                   aliases: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    """Mirror the version into the W&B registry (pending while offline); record the state."""
    with (tracker.start_run(name=f"register-{model_name}-v{version}", job_type="register",
                            group=context.run.run_id,
                            config={"model": model_name, "version": version,
                                    "lineage": fields}) as run,
          tempfile.TemporaryDirectory() as tmp):
        store.download(model_name, version, Path(tmp))
        link = run.register_model_version(Path(tmp), model_name, version, target, aliases,
                                          metadata={"registry_version": version, **fields})
    store.record_wandb_link(model_name, version, link)
    return link


def registration_assets() -> list[AssetsDefinition]:
    """`registered_<family>_model` for every registered family, in registry order."""
    return [registered_model_asset(name, families.family(name).model_type)
            for name in families.registered_names()]
