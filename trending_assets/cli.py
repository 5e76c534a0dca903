"""`python -m trending_assets.cli run`: ingest new landing files, train, print a summary.

The same work the landing sensor and the UI start, for a terminal: it uses the Dagster
instance under $DAGSTER_HOME, so every run shows in `make ui` (dg dev) afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources as package_files
from types import ModuleType

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    execute_job,
    reconstructable,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,  # no public export; the UI's GraphQL layer uses it too
)

from resources.registry_audit import registry_command
from trending_assets.assets.ingestion import landing_files
from trending_assets.automation.jobs import training_job
from trending_assets.automation.landing import (
    landing_changes,
    landing_keys,
    skipped_landing_files,
)
from trending_assets.batches import retire_command
from trending_assets.checks.model_gates import gate_check_name
from trending_assets.cli_lock import CliBusyError, exclusive_cli_run
from trending_assets.exits import exit_on_config_error
from trending_assets.governance import complete_wandb_links, reproduce_version
from trending_assets.ml import families
from trending_assets.ml.reproduce import ReproductionError
from trending_assets.production import ProductionRow, production_rows
from trending_assets.retraining import current_fingerprint, decide_retrain
from trending_assets.settings import ConfigError, Settings, dagster_home, load_settings
from trending_assets.stale_runs import cli_process_tags, fail_dead_cli_runs
from trending_assets.storage_resources import storage_resources

SAMPLE_FILE = "netflix_titles_genres.csv.gz"
FAMILIES = families.names()  # the family registry (ml/families.py), in its order
MANUAL_TAGS = {"trending/trigger": "cli", **cli_process_tags()}


def log_config(verbose: bool) -> dict:
    """Run config for the runs the CLI executes: their console log at INFO (what each step
    is doing, training progress), DEBUG (every engine event) only with --verbose."""
    return {"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}}}


def _definitions() -> ModuleType:
    """trending_assets.definitions, imported on first use: importing it loads the
    configuration, and main() reports a configuration error without a traceback."""
    from trending_assets import definitions

    return definitions


def seed_landing(settings: Settings, instance: DagsterInstance) -> str | None:
    """Place the bundled sample in an empty landing area on the very first run."""
    store = storage_resources(settings).landing.open()
    if (not settings.storage.seed_sample or landing_keys(store)
            or instance.get_dynamic_partitions(landing_files.name)):
        return None
    data = package_files.files("trending_assets.data").joinpath(SAMPLE_FILE).read_bytes()
    store.put_bytes(SAMPLE_FILE, data)
    return store.uri_of(SAMPLE_FILE)


@dataclass
class IngestOutcome:
    ingested: list[str]  # accepted: new rows for training
    quarantined: dict[str, list[str]]  # landing file -> why (see its quarantine record)
    failed: list[str]  # the ingest run itself failed (see the Dagster UI)
    skipped: dict[str, str] = field(default_factory=dict)  # not ingested (hidden name) -> why


def ingest_new_files(settings: Settings, instance: DagsterInstance,
                     verbose: bool = False) -> IngestOutcome:
    """Materialize raw_titles for every new or re-uploaded (changed) landing file."""
    stores = storage_resources(settings)
    store = stores.landing.open()
    quarantine = stores.data_records.quarantine()
    outcome = IngestOutcome([], {}, [], skipped_landing_files(store))
    for change in landing_changes(store, instance):
        key = change.key
        if not instance.has_dynamic_partition(landing_files.name, key):
            instance.add_dynamic_partitions(landing_files.name, [key])
        result = execute_job(
            reconstructable(_definitions().ingest_job_def), instance,
            tags={**MANUAL_TAGS, "dagster/partition": key,
                  "trending/content_sha256": change.sha256}, raise_on_error=False,
            run_config=log_config(verbose),
        )
        record = quarantine.get(key)
        if not result.success:
            outcome.failed.append(key)
        elif record is not None and record.get("sha256") == change.sha256:
            outcome.quarantined[key] = list(record.get("reasons") or [])
        else:
            outcome.ingested.append(key)
    return outcome


@dataclass
class SummaryRow:
    model: str
    macro_f1: float | None
    micro_f1: float | None
    gate: str
    version: str


def summarize(instance: DagsterInstance, run_id: str | None) -> list[SummaryRow]:
    """One row per model family from the latest evaluations, gates and registrations."""
    rows = []
    for family in FAMILIES:
        evaluation = _latest_metadata(instance, f"{family}_evaluation")
        gate = _latest_check(instance, f"{family}_evaluation", gate_check_name(family))
        registered = _latest_metadata(instance, f"registered_{family}_model")
        same_run = registered.get("dagster_run_id") == run_id if run_id else True
        registrable = families.family(family).registered
        if gate.startswith("FAILED: ") and registrable:
            # Below the value gate: the registration refused it, first failed criterion first.
            first = gate.removeprefix("FAILED: ").split("; ")[0]
            gate = f"refused: {(same_run and registered.get('reason')) or first}"
        if not registrable:
            version = "not registered (baseline)"
        elif registered and same_run and registered.get("version") is None:
            version = "not registered (refused)"
        elif registered.get("version") is not None:
            held = ", ".join(registered.get("aliases") or []) or registered.get("decision",
                                                                                "no alias")
            # A version an earlier run registered is still held: say so rather than
            # "not registered", which `cli summary` would contradict.
            earlier = "" if same_run else "; from an earlier run"
            version = f"v{registered['version']} ({held}{earlier})"
        else:
            version = "not registered"
        rows.append(SummaryRow(family, evaluation.get("macro_f1"), evaluation.get("micro_f1"),
                               gate, version))
    return rows


def _latest_metadata(instance: DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _latest_check(instance: DagsterInstance, asset: str, check: str) -> str:
    key = AssetCheckKey(AssetKey(asset), check)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    if record is None or record.status == AssetCheckExecutionRecordStatus.PLANNED:
        return "not run"
    if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
        return "passed"
    evaluation = record.event.dagster_event.event_specific_data if record.event else None
    return f"FAILED: {getattr(evaluation, 'description', None) or 'see the Dagster UI'}"


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(rows: list[SummaryRow]) -> str:
    return text_table(
        ("model", "test macro-F1", "test micro-F1", "gate", "registry version"),
        [(r.model, "-" if r.macro_f1 is None else f"{r.macro_f1:.3f}",
          "-" if r.micro_f1 is None else f"{r.micro_f1:.3f}", r.gate, r.version)
         for r in rows])


def format_production(rows: list[ProductionRow]) -> str:
    """Which version of each registered family is in production, since when, why, and
    what it replaced."""
    return text_table(
        ("in production", "version", "since", "replaced", "why"),
        [(r.model, "-" if r.version is None else f"v{r.version}", r.since_minutes,
          "-" if r.replaced is None else f"v{r.replaced}", r.reason) for r in rows])


def run(force: bool, verbose: bool = False) -> int:
    settings = load_settings()
    if settings.executor == "k8s" and settings.k8s.image is None:
        raise ConfigError("executor k8s: no image for the step Jobs; set k8s.image or run "
                          "where $DAGSTER_CURRENT_IMAGE is set (the code location's pod)")
    home = dagster_home()
    if home is None:  # DagsterInstance.get() explains what is missing
        return _run_locked(settings, force, verbose)
    try:
        with exclusive_cli_run(home):
            return _run_locked(settings, force, verbose)
    except CliBusyError as exc:
        print(f"not started: {exc}", file=sys.stderr)
        return 3


def _run_locked(settings: Settings, force: bool, verbose: bool) -> int:
    instance = DagsterInstance.get()
    stores = storage_resources(settings)
    for run_id in fail_dead_cli_runs(instance, stores.artifacts.open()):
        print(f"run {run_id} was left STARTED by a `cli run` process that is gone: marked "
              "failed, its checkpoints discarded")
    seeded = seed_landing(settings, instance)
    if seeded:
        print(f"placed the bundled sample in the landing area: {seeded}")
    outcome = ingest_new_files(settings, instance, verbose)
    print(f"landing files ingested: {outcome.ingested or 'none new'}")
    if outcome.quarantined:
        where = stores.data_records.quarantine().uri("<file>")
        print(f"landing files quarantined, not trained on (records: {where}):")
        for key, reasons in outcome.quarantined.items():
            first = reasons[0].removeprefix(f"{key}: ") if reasons else "see its record"
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            print(f"  {key}: {first}{more}")
    if outcome.failed:
        print(f"landing files that could not be ingested (see the Dagster UI): {outcome.failed}")
    for key, reason in outcome.skipped.items():
        print(f"  {key}: {reason}")
    run_id = None
    fingerprint = current_fingerprint(instance, _definitions().training_job_def(), settings)
    decision = decide_retrain(instance, training_job.name, fingerprint, force)
    print(decision.reason)
    if decision.retrain:
        result = execute_job(reconstructable(_definitions().training_job_def), instance,
                             tags={**MANUAL_TAGS, **fingerprint.tags()}, raise_on_error=False,
                             run_config=log_config(verbose))
        run_id = result.run_id
        interrupted = not result.success and was_interrupted(result.all_events)
        state = "succeeded" if result.success else "INTERRUPTED" if interrupted else "FAILED"
        print(f"training run {run_id}: {state}")
    print()
    print(format_summary(summarize(instance, run_id)))
    print()
    print(format_production(production_rows(storage_resources(settings).registry.open())))
    # A refused model is a result (exit 0, the summary says why); 1 is for a failed run,
    # 130 (the shell's Ctrl-C status) for one stopped by an interrupt.
    if run_id is None or result.success:
        return 0
    return 130 if interrupted else 1


def was_interrupted(events: list[DagsterEvent]) -> bool:
    """Whether the run failed because its process was interrupted (Ctrl-C, SIGTERM)."""
    return any(
        event.event_type == DagsterEventType.RUN_FAILURE
        and getattr(getattr(event.event_specific_data, "error", None), "cls_name", None)
        == "DagsterExecutionInterruptedError"
        for event in events)


def reproduce(model: str, version: int) -> int:
    try:
        outcome = reproduce_version(load_settings(), model, version)
    except ReproductionError as exc:
        print(f"cannot reproduce: {exc}", file=sys.stderr)
        return 2
    print(outcome.table())
    for note in outcome.environment_notes:
        print(f"environment differs: {note}")
    verdict = "reproduced" if outcome.reproduced else "NOT reproduced"
    print(f"{model} v{version}: {verdict} (largest difference {outcome.largest_difference:.4g},"
          f" tolerance {outcome.tolerance})")
    print(json.dumps(outcome.summary()))
    return 0 if outcome.reproduced else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trending_assets.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="ingest new landing files, train, print a summary")
    run_parser.add_argument("--force", action="store_true", help="retrain even with no new data")
    run_parser.add_argument("--verbose", action="store_true",
                            help="also print Dagster's DEBUG events (every step start, output)")
    sub.add_parser("summary", help="print the summary of the latest models")
    reproduce_parser = sub.add_parser(
        "reproduce", help="retrain a registered version from its manifest, compare metrics")
    reproduce_parser.add_argument("--model", required=True, help="e.g. trending-now-xgboost")
    reproduce_parser.add_argument("--version", type=int, required=True)
    links_parser = sub.add_parser(
        "complete-wandb-links",
        help="after `wandb sync`: link pending registry versions into the W&B registry")
    links_parser.add_argument("--entity", default=None,
                              help="W&B entity the runs were synced to (default: yours)")
    registry_parser = sub.add_parser(
        "registry", help="verify: check every version's files and the alias log (exit 1 when "
                         "something is wrong); repair: fix what can be fixed")
    registry_parser.add_argument("action", choices=("verify", "repair"))
    retire_parser = sub.add_parser(
        "retire", help="take an accepted landing file out of training from the next run")
    retire_parser.add_argument("file", help="the landing file, as its partition is named")
    retire_parser.add_argument("--reason", default="retired by command")
    retire_parser.add_argument("--by", default="cli", help="who retires it")
    args = parser.parse_args(argv)
    return exit_on_config_error(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return run(args.force, args.verbose)
    if args.command == "reproduce":
        return reproduce(args.model, args.version)
    if args.command == "registry":
        settings = load_settings()
        return registry_command(storage_resources(settings).registry.open(), args.action,
                                timedelta(seconds=settings.registry.orphan_grace_seconds))
    if args.command == "retire":
        stores = storage_resources(load_settings())
        return retire_command(DagsterInstance.get(), stores.stored_assets,
                              stores.data_records.retired(), args.file, args.reason, args.by)
    if args.command == "complete-wandb-links":
        import wandb

        settings = load_settings()
        registry = storage_resources(settings).registry.open()
        linked = complete_wandb_links(registry, wandb.Api(),
                                      args.entity or settings.tracking.entity)
        print(f"{len(linked)} pending link(s) completed")
        return 0
    print(format_summary(summarize(DagsterInstance.get(), None)))
    print()
    print(format_production(production_rows(
        storage_resources(load_settings()).registry.open())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
