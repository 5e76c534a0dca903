"""Declarative automation and freshness policies, applied to the asset definitions from config.

Below raw_titles the graph updates itself:

- training_data retrains when enough newly *accepted* landing data has arrived
  (`NewAcceptedData`: at least `min_new_rows` rows, or any once the oldest has waited
  `max_wait_minutes`), never sooner than `min_interval_minutes` after the last attempt, and
  only once the ingestion runs are done. A quarantined file stores no rows, so it never
  counts: a bad file lands and nothing downstream runs.
- everything further down is `eager()` AND `all_deps_blocking_checks_passed()`: it follows
  its parents in the same run, and never builds on a parent whose blocking check failed
  (declarative automation does not respect blocking checks on its own). Parents updated
  by a retrain request's run are left out of eager's "a parent updated": a request for
  one model family does not retrain the others.

`automate(assets, settings)` is the one place these conditions and the
`FreshnessPolicy.time_window` policies are put on the assets; the asset modules do not
carry them. The conditions are evaluated by `retrain_automation`, an automation condition
sensor that runs in the code server (NewAcceptedData is plain Python).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    AutomationResult,
    BetaWarning,
    DagsterInstance,
    DefaultSensorStatus,
    FreshnessPolicy,
    map_asset_specs,
)
from dagster._core.definitions.declarative_automation.automation_context import (
    AutomationContext,  # not exported; the type custom conditions receive
)

from trending_assets.assets.ingestion import raw_titles
from trending_assets.automation.requests import REQUEST_TAG
from trending_assets.settings import ConfigError, RetrainSettings, Settings

RECORDS_PAGE = 1000


@dataclass(frozen=True)
class RetrainDecision:
    due: bool
    new_rows: int
    new_batches: int
    why: str


def retrain_decision(instance: DagsterInstance, target: AssetKey, upstream: AssetKey,
                     retrain: RetrainSettings, now: float) -> RetrainDecision:
    """Whether enough accepted data landed in `upstream` since `target` last materialized."""
    latest = instance.fetch_materializations(AssetRecordsFilter(asset_key=target),
                                             limit=1).records
    after = latest[0].storage_id if latest else None
    last_attempt = latest[0].timestamp if latest else None
    planned = instance.get_latest_planned_materialization_info(target)
    if planned is not None and (after is None or planned.storage_id > after):
        run = instance.get_run_record_by_id(planned.run_id)
        if run is not None:
            last_attempt = max(last_attempt or 0.0, run.create_timestamp.timestamp())
    rows = batches = 0
    oldest: float | None = None
    cursor = None
    while True:
        page = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=upstream, after_storage_id=after), limit=RECORDS_PAGE,
            cursor=cursor, ascending=True)
        for record in page.records:
            metadata = record.asset_materialization.metadata if record.asset_materialization \
                else {}
            quarantined = metadata.get("quarantined")
            accepted_rows = metadata.get("rows")
            if accepted_rows is None or (quarantined is not None and quarantined.value):
                continue
            rows += int(accepted_rows.value)
            batches += 1
            oldest = record.timestamp if oldest is None else min(oldest, record.timestamp)
        if not page.has_more:
            break
        cursor = page.cursor
    if rows == 0:
        return RetrainDecision(False, 0, 0, "no newly accepted landing data")
    counted = f"{rows} new accepted rows in {batches} batch(es)"
    if last_attempt is not None and now - last_attempt < retrain.min_interval_minutes * 60:
        wait = retrain.min_interval_minutes - (now - last_attempt) / 60
        return RetrainDecision(False, rows, batches,
                               f"{counted}; the last attempt was too recent ({wait:.0f} min "
                               "left of min_interval_minutes)")
    if rows >= retrain.min_new_rows:
        return RetrainDecision(True, rows, batches, f"{counted} >= min_new_rows "
                                                    f"{retrain.min_new_rows}")
    if retrain.max_wait_minutes is not None and oldest is not None \
            and now - oldest >= retrain.max_wait_minutes * 60:
        return RetrainDecision(True, rows, batches, f"{counted}, waiting longer than "
                                                    f"max_wait_minutes {retrain.max_wait_minutes}")
    return RetrainDecision(False, rows, batches,
                           f"{counted} < min_new_rows {retrain.min_new_rows}")


class NewAcceptedData(AutomationCondition[AssetKey]):
    """True when enough accepted landing data arrived since the target last materialized."""

    def __init__(self, upstream: AssetKey, retrain: RetrainSettings) -> None:
        self.upstream = upstream
        self.retrain = retrain

    @property
    def name(self) -> str:
        return "new_accepted_data"

    @property
    def description(self) -> str:
        r = self.retrain
        wait = f", or any after {r.max_wait_minutes} min" if r.max_wait_minutes else ""
        return (f"at least {r.min_new_rows} newly accepted rows in "
                f"{self.upstream.to_user_string()}{wait}; {r.min_interval_minutes} min "
                "after the last attempt")

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        decision = retrain_decision(context.asset_graph_view.instance, context.key,
                                    self.upstream, self.retrain,
                                    context.evaluation_time.timestamp())
        subset = context.candidate_subset if decision.due else context.get_empty_subset()
        return AutomationResult(context, subset, metadata={
            "new_accepted_rows": decision.new_rows, "new_batches": decision.new_batches,
            "why": decision.why})


def retrain_condition(retrain: RetrainSettings) -> AutomationCondition:
    return (
        NewAcceptedData(raw_titles.key, retrain)
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
        & AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("retrain_on_new_accepted_data")


def propagate_condition() -> AutomationCondition:
    # eager() minus one thing: a parent updated by a retrain request's run does not pull the
    # other families along (a request for XGBoost with new hyperparameters rebuilds the
    # splits, and must not retrain BERT as a side effect); new landing data still does.
    parent_updated = (
        AutomationCondition.newly_updated()
        & ~AutomationCondition.executed_with_root_target()
        & ~AutomationCondition.executed_with_tags(tag_keys={REQUEST_TAG})
    ).with_label("newly_updated_not_by_a_retrain_request")
    eager = AutomationCondition.eager().replace("newly_updated_without_root", parent_updated)
    return (eager & AutomationCondition.all_deps_blocking_checks_passed()
            ).with_label("eager_when_blocking_checks_passed")


def freshness_policy(settings: Settings, name: str) -> FreshnessPolicy | None:
    window = settings.automation.freshness.get(name)
    if window is None:
        return None
    return FreshnessPolicy.time_window(
        fail_window=timedelta(hours=window.fail_hours),
        warn_window=None if window.warn_hours is None else timedelta(hours=window.warn_hours))


def automated_keys(assets: Sequence[AssetsDefinition], settings: Settings) -> set[AssetKey]:
    """The assets below raw_titles that automation materializes."""
    below = AssetSelection.assets(raw_titles).downstream(include_self=False).resolve(assets)
    return {k for k in below if k.to_user_string() not in settings.automation.on_demand_assets}


def _check_names(assets: Sequence[AssetsDefinition], settings: Settings) -> None:
    known = {k.to_user_string() for a in assets for k in a.keys}
    for where, names in (("automation.freshness", settings.automation.freshness),
                         ("automation.on_demand_assets", settings.automation.on_demand_assets)):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown asset(s) {unknown}; the assets are "
                              f"{sorted(known)}")


def automate(assets: Sequence[AssetsDefinition], settings: Settings) -> list[AssetsDefinition]:
    """The asset definitions with the configured automation conditions and freshness policies."""
    _check_names(assets, settings)
    automated = automated_keys(assets, settings) if settings.automation.propagate else set()
    # The children of raw_titles wait for enough new data; the rest follow their parents.
    first = automated & AssetSelection.assets(raw_titles).downstream(
        depth=1, include_self=False).resolve(assets)

    def configure(spec: AssetSpec) -> AssetSpec:
        changes = {}
        policy = freshness_policy(settings, spec.key.to_user_string())
        if policy is not None:
            changes["freshness_policy"] = policy
        if spec.key in first:
            changes["automation_condition"] = retrain_condition(settings.automation.retrain)
        elif spec.key in automated:
            changes["automation_condition"] = propagate_condition()
        return spec.replace_attributes(**changes) if changes else spec

    return list(map_asset_specs(configure, assets))


def build_automation_sensor(assets: Sequence[AssetsDefinition],
                            settings: Settings) -> AutomationConditionSensorDefinition | None:
    if not settings.automation.propagate:
        return None
    with warnings.catch_warnings():
        # use_user_code_server is beta in 1.13; it is what lets a Python condition run.
        warnings.simplefilter("ignore", BetaWarning)
        return _automation_sensor(assets, settings)


def _automation_sensor(assets: Sequence[AssetsDefinition],
                       settings: Settings) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "retrain_automation",
        target=AssetSelection.assets(*sorted(automated_keys(assets, settings),
                                             key=lambda k: k.to_user_string())),
        use_user_code_server=True,  # NewAcceptedData is Python: evaluated in the code server
        default_status=DefaultSensorStatus.RUNNING if settings.automation.sensors_running
        else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=settings.automation.automation_interval_seconds,
        run_tags={"trending/trigger": "automation"},
        description="Retrains below raw_titles when enough new accepted data landed, and "
                    "propagates only past passed blocking checks.",
    )
