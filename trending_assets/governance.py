"""Registry governance in plain functions: register a candidate (champion evidence,
blessing, model card, manifest, record), retrain a version from its manifest, complete
pending W&B links.

The registration assets (trending_assets/assets/registry.py) call `register_candidate`;
the CLI calls the other two:

    python -m trending_assets.cli reproduce --model trending-now-xgboost --version 3
    python -m trending_assets.cli complete-wandb-links      # after `wandb sync`
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resources.io_manager import read_version_at
from resources.model_files import local_model_folder
from resources.notify import Alert
from resources.registry import CHAMPION_ALIAS, ModelRegistry
from resources.tracking import complete_link, registry_target
from trending_assets.lineage import table_version
from trending_assets.ml import families
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
from trending_assets.ml.manifest import build_manifest, environment_differences
from trending_assets.ml.model_card import build_model_card, model_card_markdown
from trending_assets.ml.report import EvaluationResult, evaluate_on_splits
from trending_assets.ml.reproduce import (
    MetricComparison,
    ReproductionError,
    base_model_record,
    compare_metrics,
    retrain,
    within,
)
from trending_assets.settings import GateSettings, Settings, load_taxonomy_config
from trending_assets.storage_resources import storage_resources

# The split table's asset; its stored versions live under assets/<name> (the manifest
# names that key, so a version can be retrained on exactly its rows).
SPLITS_ASSET = "data_splits"
MANIFEST_FILE = "manifest.json"
BLESSING_FILE = "blessing.md"


@dataclass(frozen=True)
class Candidate:
    """A trained model and its evaluation, with what its registration records."""

    model_name: str
    family: str
    model_type: type  # how the registry loads a stored champion of this family
    model: Any
    evaluation: EvaluationResult
    splits: TitleSplits
    settings: Settings
    lineage: dict[str, Any]  # trending_assets.lineage.lineage(), data_version included
    upstream: dict[str, dict[str, Any]]  # stored upstream versions consumed, by asset name

    def save(self, directory: Path) -> None:
        """The version's files: the model, its evaluation and its decision thresholds."""
        self.model.save(directory)
        self.evaluation.save(directory / "evaluation")
        (directory / "thresholds.json").write_text(json.dumps(self.evaluation.thresholds))


@dataclass(frozen=True)
class Registered:
    """A registration decision: its version (None when refused below the value gate, so
    nothing was stored), its blessing and the champion it was judged on."""

    version: int | None
    blessing: Blessing
    champion: ChampionEvidence | None
    wandb_target: str  # the W&B registry collection the version is mirrored into


def register_candidate(registry: ModelRegistry, candidate: Candidate,
                       override: Override | None,
                       on_override: Callable[[Blessing], None]) -> Registered:
    """Bless the candidate against the production champion on the same test rows and store
    it as a new immutable version with its record and documents; aliases move only as the
    blessing says. A candidate below its value gate is not stored: its decision is recorded
    under registry/<model>/refused/ and the result has no version. `on_override` hears of a
    forced promotion before anything is stored; if it raises, nothing is. The candidate's
    and the champion's files are sha256-checked before the decision is committed
    (ArtifactIntegrityError names a damaged one)."""
    settings, family, model_name = candidate.settings, candidate.family, candidate.model_name
    gate = settings.gates.of(family)
    rows = rows_digest(candidate.splits.table, candidate.splits.genres)
    metrics = gate_metrics(candidate.evaluation.overall, candidate.evaluation.slices)
    champion = champion_evidence(registry, model_name, family, candidate.model_type,
                                 candidate.splits, rows)
    blessing = decide(model_name, family, metrics, gate, champion, override)
    target = registry_target(settings.registry.wandb_registry, model_name)
    if blessing.value_refused:
        record_refusal(registry, candidate, _record(candidate, metrics, rows, blessing, target))
        return Registered(None, blessing, champion, target)
    if blessing.override:
        # The alert goes out before anything moves: no silent override.
        on_override(blessing)
    documents = _documents(candidate, blessing, gate, rows)
    entry = registry.register(
        model_name, candidate.save,
        record=_record(candidate, metrics, rows, blessing, target),
        # production first: it is the conditional move (compare-and-set on the champion).
        aliases=sorted(blessing.aliases, key=lambda a: a != CHAMPION_ALIAS),
        reason=blessing.summary, documents=documents,
        expected={CHAMPION_ALIAS: None if champion is None else champion.version},
        # The champion's files are checked even when its recorded metrics spared loading
        # it: a damaged champion stops the registration with the file named, unless this
        # candidate's identical files have just replaced the damaged blob.
        verify=() if champion is None else (champion.version,),
    )
    return Registered(entry["version"], blessing, champion, target)


def refusal_key(model_name: str, run_id: str) -> str:
    return f"registry/{model_name}/refused/{run_id}.json"


def record_refusal(registry: ModelRegistry, candidate: Candidate,
                   record: dict[str, Any]) -> str:
    """Store the decision on a candidate that was not registered (once per run); its key."""
    key = refusal_key(candidate.model_name, candidate.lineage["dagster_run_id"])
    registry.store.put_if_absent(key, _json_bytes({**record, "registered": False}))
    return key


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
    result = evaluate_on_splits(aligned_to(loaded, splits.genres), family, splits)
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


def _documents(candidate: Candidate, blessing: Blessing, gate: GateSettings,
               rows: str) -> Callable[[int], dict[str, bytes]]:
    """The documents of a version (model card, manifest, blessing) once it has a number.

    Their inputs are gathered here, before anything is stored: the registry may call the
    result once per version number it tries."""
    settings, family = candidate.settings, candidate.family
    splits, fields, upstream = candidate.splits, candidate.lineage, candidate.upstream
    blessing_dict = blessing.to_dict()
    config_dump = settings.model_dump(mode="json")
    data = {
        "data_version": fields["data_version"], "split_rows": splits.counts(),
        "splits_key": f"assets/{SPLITS_ASSET}",
        "splits_version": upstream[SPLITS_ASSET].get("dagster_run_id"),
        "content_hash": fields["data_version"], "evaluation_rows": rows,
        "genres": splits.genres,
        "taxonomy_file": settings.data.taxonomy_file,
        "taxonomy_sha256": _sha256_json(load_taxonomy_config(settings)),
    }
    spec = families.family(family)
    training_config = {"params": config_dump[spec.section],
                       **({"tfidf": config_dump["tfidf"]} if spec.input == "tfidf" else {}),
                       "split": config_dump["data"]["split"]}
    base_model = None
    if hasattr(candidate.model, "base_model"):  # fine-tuned from base weights (BERT):
        # recorded when training started (see BertGenreModel.base_model)
        base_model = candidate.model.base_model or _base_model_now(settings)

    def documents(version: int) -> dict[str, bytes]:
        card = build_model_card(
            model=candidate.model_name, version=version, family=family,
            evaluation=candidate.evaluation, blessing=blessing_dict,
            gate=gate.model_dump(mode="json"),
            intended_use=settings.registry.model_card.intended_use,
            limitations=settings.registry.model_card.limitations,
            data=data, training_config=training_config,
            lineage={**fields, "upstream": upstream})
        manifest = build_manifest(
            model=candidate.model_name, version=version, family=family,
            git_commit=fields["git_commit"], config=config_dump,
            seeds={"split_salt": settings.data.split.salt,
                   "model": config_dump[spec.section].get("seed")},
            data=data, base_model=base_model)
        return {
            "model_card.md": model_card_markdown(card).encode(),
            "model_card.json": _json_bytes(card),
            MANIFEST_FILE: _json_bytes(manifest),
            BLESSING_FILE: blessing.to_markdown().encode(),
        }

    return documents


def _base_model_now(settings: Settings) -> dict[str, str]:
    """The configured base model as it is now: only for a model saved before models kept
    the record of what they were trained from."""
    return base_model_record(settings.bert.model_dump(), local_model_folder(
        settings.bert.model_path, settings.storage.cache, settings.storage.s3_endpoint_url))


def _record(candidate: Candidate, metrics: dict[str, Any], rows: str, blessing: Blessing,
            target: str) -> dict[str, Any]:
    """The version record: metrics, gate metrics and rows, thresholds, blessing, lineage."""
    evaluation, backend = candidate.evaluation, candidate.settings.registry.backend
    return {
        "family": candidate.family,
        "metrics": {"macro_f1": evaluation.macro_f1,
                    "micro_f1": evaluation.micro_f1,
                    "slices": {s: {"macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"]}
                               for s, m in evaluation.slices.items()}},
        "gate_metrics": metrics,
        "evaluation_rows": rows,
        "thresholds": evaluation.thresholds,
        "blessing": blessing.to_dict(),
        "lineage": candidate.lineage,
        "upstream": candidate.upstream,
        "wandb": {"run": candidate.upstream[f"{candidate.family}_model"].get("wandb_run"),
                  "registry_backend": backend,
                  "registry_target": target if backend == "wandb" else None},
    }


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class Reproduction:
    model: str
    version: int
    family: str
    tolerance: float
    rows: list[MetricComparison]
    environment_notes: list[str]

    @property
    def reproduced(self) -> bool:
        return within(self.rows, self.tolerance)

    @property
    def largest_difference(self) -> float:
        return max((abs(r.difference) for r in self.rows if r.difference is not None),
                   default=0.0)

    def table(self) -> str:
        lines = [f"{'metric':<40} {'recorded':>9} {'retrained':>9} {'difference':>10}"]
        for r in self.rows:
            again = "-" if r.reproduced is None else f"{r.reproduced:.4f}"
            diff = "-" if r.difference is None else f"{r.difference:+.4f}"
            lines.append(f"{r.metric:<40} {r.recorded:>9.4f} {again:>9} {diff:>10}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "family": self.family,
                "reproduced": self.reproduced, "tolerance": self.tolerance,
                "largest_difference": self.largest_difference, "metrics": len(self.rows),
                "environment_notes": self.environment_notes}


def reproduce_version(settings: Settings, model: str, version: int) -> Reproduction:
    """Retrain a registered version from its manifest (same split table, configuration and
    seeds) and compare the new test metrics with the recorded ones."""
    registry = storage_resources(settings).registry.open()
    if version not in registry.versions(model):
        known = {m: registry.versions(m) for m in registry.models()}
        raise ReproductionError(
            f"{model} has no version {version} in the registry at "
            f"{registry.store.uri_of('registry')}; registered: "
            + ("; ".join(f"{m} v{', v'.join(map(str, vs))}" for m, vs in known.items())
               or "nothing yet (`make run` registers the first versions)"))
    record = registry.get(model, version)
    manifest = json.loads(registry.document(model, version, MANIFEST_FILE))
    data = manifest["data"]
    if not data.get("splits_version"):
        raise ReproductionError(f"{model} v{version}: the manifest does not say which stored "
                                "split table it was trained on")
    splits, _ = read_version_at(registry.store, data["splits_key"], data["splits_version"],
                                TitleSplits)
    found = table_version(splits.table)
    if found != data["content_hash"]:
        raise ReproductionError(
            f"{model} v{version}: the stored split table hashes to {found}, the manifest "
            f"recorded {data['content_hash']}; the data the version was trained on is gone")
    family, config = manifest["family"], manifest["config"]
    section = families.family(family).section
    if "model_path" in config[section]:  # an s3:// base model is trained from its local copy
        config = {**config, section: {**config[section], "model_path": local_model_folder(
            config[section]["model_path"], settings.storage.cache,
            settings.storage.s3_endpoint_url)}}
    model_object = retrain(family, splits, config, manifest.get("base_model"))
    result = evaluate_on_splits(model_object, family, splits)
    rows = compare_metrics(record["gate_metrics"], gate_metrics(result.overall, result.slices))
    return Reproduction(model, version, family, settings.registry.tolerance(family),
                        rows, environment_differences(manifest))


def complete_wandb_links(registry: ModelRegistry, api: Any, entity: str | None = None,
                         log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Link every pending version into its W&B registry collection (oldest first), with the
    aliases the registry gives it now; record each link. `api` is a `wandb.Api()`."""
    entity = entity or api.default_entity
    if not entity:
        raise ValueError("no W&B entity: pass --entity or log in with `wandb login`")
    done = []
    for model in registry.models():
        current = registry.aliases(model)
        for version, link in registry.wandb_links(model).items():
            if link["status"] != "pending":
                continue
            aliases = sorted(a for a, v in current.items() if v == version)
            linked = complete_link(api, entity, link, aliases)
            registry.record_wandb_link(model, version, linked)
            log(f"{model} v{version}: linked to {link['target']} "
                f"(aliases: {', '.join(aliases) or 'none'})")
            done.append(linked)
    return done
