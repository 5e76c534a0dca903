"""Registration assets: every candidate that passed its value gate becomes an immutable
registry version with its blessing (the champion/challenger decision and why), a model card
and a reproducibility manifest; aliases move only as the blessing says."""

import hashlib
import json
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

from resources.notify import Alert, NotifierResource
from resources.registry import CHAMPION_ALIAS, ModelRegistry, ModelRegistryResource
from resources.tracking import WandbTracker, registry_target
from trending_assets.assets import ML_OWNERS
from trending_assets.assets.evaluation import score
from trending_assets.lineage import as_metadata, lineage, measured, table_version
from trending_assets.ml.bert import BertGenreModel
from trending_assets.ml.dataset import TitleSplits
from trending_assets.ml.gate import (
    Blessing,
    ChampionEvidence,
    Override,
    aligned_to,
    decide,
    gate_metrics,
    rows_digest,
)
from trending_assets.ml.manifest import build_manifest
from trending_assets.ml.model_card import build_model_card, model_card_markdown
from trending_assets.ml.report import EvaluationResult
from trending_assets.ml.reproduce import base_model_record
from trending_assets.ml.xgboost_model import XGBoostGenreModel
from trending_assets.settings import Settings, SettingsResource, load_taxonomy_config

MODEL_NAME_PREFIX = "trending-now"
# Bump when what the assets compute changes (see trending_assets/assets/__init__.py).
REGISTRATION_CODE_VERSION = "2"
SPLITS_ASSET = "data_splits"
MODEL_CARD_FILES = ("model_card.md", "model_card.json")
MANIFEST_FILE = "manifest.json"
BLESSING_FILE = "blessing.md"


class PromotionConfig(Config):
    """Run config of a registration: an audited override that forces promotion."""

    force_promotion: bool = Field(
        False, description="promote even if the blessing refuses; needs reason and author")
    reason: str = Field("", description="why this model must ship despite its gate")
    author: str = Field("", description="who takes the decision")


def upstream_record(context: AssetExecutionContext, asset_name: str) -> dict[str, Any]:
    """URI, content hash and W&B run of the stored upstream version this run consumed."""
    event = context.instance.get_latest_materialization_event(AssetKey(asset_name))
    if event is None or event.asset_materialization is None:
        return {}
    meta = event.asset_materialization.metadata
    return {key: meta[key].value for key in ("artifact_uri", "artifact_sha256", "wandb_run",
                                              "data_version", "dagster_run_id") if key in meta}


def champion_evidence(registry: ModelRegistry, model_name: str, family: str, model_type: type,
                      splits: TitleSplits, rows: str) -> ChampionEvidence | None:
    """The production champion's metrics on the candidate's rows: its recorded metrics when
    it was evaluated on exactly these rows, else re-scored (loaded sha256-verified)."""
    version = registry.champion(model_name)
    if version is None:
        return None
    record = registry.get(model_name, version)
    if record.get("evaluation_rows") == rows and "gate_metrics" in record:
        return ChampionEvidence(version, record["gate_metrics"], "recorded")
    loaded = registry.load(model_name, version, model_type)
    result = score(aligned_to(loaded, splits.genres), family, splits, None)
    return ChampionEvidence(version, gate_metrics(result.overall, result.slices), "re-scored",
                            tuple(g for g in splits.genres if g not in loaded.genres))


def override_alert(settings: Settings, blessing: Blessing, asset_name: str,
                   run_id: str) -> Alert:
    """What the alert channel hears about a forced promotion."""
    failed = blessing.failed
    assert blessing.override is not None
    return Alert(
        kind="forced_promotion", severity="WARN",
        summary=f"{blessing.model}: forced promotion to {', '.join(blessing.aliases)} by "
                f"{blessing.override['author']}: {blessing.override['reason']}"
                + ("" if blessing.override["used"] else " (not needed: the gate passed)"),
        url=f"{settings.alerts.ui_base_url.rstrip('/')}/assets/{asset_name}",
        asset=asset_name,
        observed="; ".join(c.reason for c in failed) or "every criterion passed",
        threshold="; ".join(f"{c.name} {c.threshold}" for c in failed) or None,
        run_id=run_id, details={"override": blessing.override, "summary": blessing.summary},
    )


def registered_model_asset(family: str, model_type: type) -> AssetsDefinition:
    model_name = f"{MODEL_NAME_PREFIX}-{family}"
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
                    "author).",
    )
    def _registered(
        context: AssetExecutionContext, config: PromotionConfig, settings: SettingsResource,
        registry: ModelRegistryResource, tracker: WandbTracker, notifier: NotifierResource,
        model: model_type, evaluation: EvaluationResult, data_splits: TitleSplits,
    ) -> MaterializeResult:
        # An incomplete override is refused before anything is stored.
        override = Override.requested(config.force_promotion, config.reason, config.author,
                                      model_name)
        settings_value = settings.get()
        gate = getattr(settings_value.gates, family)
        store = registry.open()
        upstream = {name: upstream_record(context, name)
                    for name in (f"{family}_model", f"{family}_evaluation", SPLITS_ASSET)}
        data_version = table_version(data_splits.table)
        fields = lineage(context, settings_value, data_version)
        rows = rows_digest(data_splits.table, data_splits.genres)
        candidate = gate_metrics(evaluation.overall, evaluation.slices)

        with measured() as figures:
            champion = champion_evidence(store, model_name, family, model_type, data_splits,
                                         rows)
            blessing = decide(model_name, family, candidate, gate, champion, override)
            if blessing.override:
                # The alert goes out before anything moves: no silent override.
                notifier.send(override_alert(settings_value, blessing, asset_name,
                                             context.run.run_id))
            blessing_dict = blessing.to_dict()
            config_dump = settings_value.model_dump(mode="json")
            data = {
                "data_version": data_version, "split_rows": data_splits.counts(),
                "splits_key": f"assets/{SPLITS_ASSET}",
                "splits_version": upstream[SPLITS_ASSET].get("dagster_run_id"),
                "content_hash": data_version, "evaluation_rows": rows,
                "genres": data_splits.genres,
                "taxonomy_file": settings_value.data.taxonomy_file,
                "taxonomy_sha256": _sha256_json(load_taxonomy_config(settings_value)),
            }
            training_config = {"params": config_dump[family],
                               **({"tfidf": config_dump["tfidf"]} if family != "bert" else {}),
                               "split": config_dump["data"]["split"]}
            base_model = base_model_record(config_dump["bert"]) if family == "bert" else None

            def documents(version: int) -> dict[str, bytes]:
                card = build_model_card(
                    model=model_name, version=version, family=family, evaluation=evaluation,
                    blessing=blessing_dict, gate=gate.model_dump(mode="json"),
                    intended_use=settings_value.registry.model_card.intended_use,
                    limitations=settings_value.registry.model_card.limitations,
                    data=data, training_config=training_config,
                    lineage={**fields, "upstream": upstream})
                manifest = build_manifest(
                    model=model_name, version=version, family=family,
                    git_commit=fields["git_commit"], config=config_dump,
                    seeds={"split_salt": settings_value.data.split.salt,
                           "model": config_dump[family].get("seed")},
                    data=data, base_model=base_model)
                return {
                    "model_card.md": model_card_markdown(card).encode(),
                    "model_card.json": _json_bytes(card),
                    MANIFEST_FILE: _json_bytes(manifest),
                    BLESSING_FILE: blessing.to_markdown().encode(),
                }

            def save(directory: Path) -> None:
                model.save(directory)
                evaluation.save(directory / "evaluation")
                (directory / "thresholds.json").write_text(json.dumps(evaluation.thresholds))

            # production first: it is the conditional move (compare-and-set on the champion).
            aliases = sorted(blessing.aliases, key=lambda a: a != CHAMPION_ALIAS)
            backend = settings_value.registry.backend
            target = registry_target(settings_value.registry.wandb_registry, model_name)
            entry = store.register(
                model_name, save,
                record={
                    "family": family,
                    "metrics": {"macro_f1": evaluation.macro_f1,
                                "micro_f1": evaluation.micro_f1,
                                "slices": {s: {"macro_f1": m["macro_f1"],
                                               "micro_f1": m["micro_f1"]}
                                           for s, m in evaluation.slices.items()}},
                    "gate_metrics": candidate,
                    "evaluation_rows": rows,
                    "thresholds": evaluation.thresholds,
                    "blessing": blessing_dict,
                    "lineage": fields,
                    "upstream": upstream,
                    "wandb": {"run": upstream[f"{family}_model"].get("wandb_run"),
                              "registry_backend": backend,
                              "registry_target": target if backend == "wandb" else None},
                },
                aliases=aliases, reason=blessing.summary, documents=documents,
                expected={CHAMPION_ALIAS: None if champion is None else champion.version},
            )
            version = entry["version"]
            link = None
            if backend == "wandb" and tracker.mode != "disabled":
                link = _link_in_wandb(context, tracker, store, model_name, version, target,
                                      blessing.aliases, fields)
        context.log.info(f"{model_name} v{version}: {blessing.summary}")
        return MaterializeResult(metadata={
            **as_metadata(fields, figures),
            "model_name": model_name,
            "version": version,
            "decision": blessing.decision,
            "aliases": blessing.aliases,
            "blessing": MetadataValue.md(blessing.to_markdown()),
            "champion_version": None if champion is None else champion.version,
            "forced_by": None if not blessing.override else blessing.override["author"],
            "macro_f1": evaluation.macro_f1,
            "micro_f1": evaluation.micro_f1,
            "registry_uri": store.store.uri_of(f"registry/{model_name}"),
            "model_card": MetadataValue.md(
                store.document(model_name, version, "model_card.md").decode()),
            "wandb_registry_link": "not mirrored" if link is None else link["status"],
            "upstream": MetadataValue.json(upstream),
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


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


registered_xgboost_model = registered_model_asset("xgboost", XGBoostGenreModel)
registered_bert_model = registered_model_asset("bert", BertGenreModel)
