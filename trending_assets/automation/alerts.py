"""Alerts on failed checks, stale assets, quarantined landing files and failed runs.

Open-source Dagster records these events but sends nothing, so the `quality_alerts` sensor
does: one alert per failed check evaluation (blocking or not), per freshness change to WARN
or FAIL, per quarantined landing file (a failed batch check that quarantined its file) and
per failed run. Check evaluations are read from the instance's check execution records (the
SQLite event log Dagster uses locally is sharded by run and cannot page
ASSET_CHECK_EVALUATION records by storage id; Postgres could), freshness changes and run
failures from their event records after a storage-id cursor.

Every alert goes to every channel that is up, also while another is down (a channel that
fails is not tried again in the same tick). The cursor advances only past alerts that every
channel has, so a channel that is down gets what it missed on a later tick; the channels
that already have an alert are not sent it again (resources/notify.py:DeliveryLedger), also
when a tick is lost after sending. (Dagster's run failure sensor moves its cursor past a run
even when the alert could not be sent, so failed runs are read here instead.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogRecord,
    EventRecordsFilter,
    RunStatusChangeRecordsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import (  # no public export
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from resources.notify import Alert, DeliveryLedger, NotifierResource, NotifyError
from trending_assets.checks.data_quality import BATCH_CHECK
from trending_assets.settings import Settings

ALERTING_FRESHNESS_STATES = ("WARN", "FAIL")
THRESHOLD_PREFIXES = ("min_", "max_")


class UiLinks:
    """Pages of the Dagster UI, from the configured base URL."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")

    def asset(self, key: AssetKey) -> str:
        return f"{self.base}/assets/{'/'.join(quote(p) for p in key.path)}"

    def check(self, key: AssetKey, check_name: str) -> str:
        return f"{self.asset(key)}?view=checks&checkDetail={quote(check_name)}"

    def run(self, run_id: str) -> str:
        return f"{self.base}/runs/{run_id}"


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def observed_and_thresholds(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """'macro_f1=0.212' / 'min_macro_f1=0.3' from metadata that pairs a value with a bound."""
    observed, bounds = [], []
    for name, value in metadata.items():
        for prefix in THRESHOLD_PREFIXES:
            bound = metadata.get(f"{prefix}{name}")
            if bound is not None:
                observed.append(f"{name}={_plain(value):.4g}" if isinstance(
                    _plain(value), float) else f"{name}={_plain(value)}")
                bounds.append(f"{prefix}{name}={_plain(bound)}")
    return (", ".join(observed) or None), (", ".join(bounds) or None)


def check_alert(execution: AssetCheckExecutionRecord, links: UiLinks) -> Alert:
    """The alert for one failed check execution."""
    entry = execution.event
    evaluation = entry.dagster_event.event_specific_data
    key, check_name = evaluation.asset_key, evaluation.check_name
    metadata = {k: _plain(v) for k, v in evaluation.metadata.items()}
    run_id = execution.run_id
    severity = evaluation.severity.value
    common = {"asset": key.to_user_string(), "check": check_name, "run_id": run_id,
              "event_id": f"check-execution:{execution.id}"}
    if check_name == BATCH_CHECK and metadata.get("quarantined"):
        file = str(metadata.get("file") or evaluation.partition or "?")
        return Alert(
            kind="quarantined", severity=severity,
            summary=f"landing file {file} quarantined: {evaluation.description}",
            url=links.check(key, check_name),
            observed=evaluation.description,
            threshold="the batch suite's error expectations (see the quarantine record)",
            details={"file": file, "partition": evaluation.partition,
                     "quarantine_record": metadata.get("quarantine_record"),
                     "reasons": metadata.get("reasons"), "run_url": links.run(run_id)},
            **common)
    observed, threshold = observed_and_thresholds(metadata)
    blocking = "blocking" if evaluation.blocking else "non-blocking"
    return Alert(
        kind="check_failed", severity=severity,
        summary=f"{blocking} check {check_name} on {key.to_user_string()} failed: "
                f"{evaluation.description}",
        url=links.check(key, check_name),
        observed=observed or evaluation.description,
        threshold=threshold or "stated in the observation (the check's expected values)",
        details={"description": evaluation.description, "blocking": evaluation.blocking,
                 "partition": evaluation.partition, "run_url": links.run(run_id)},
        **common)


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:g} h"


def freshness_alert(record: EventLogRecord, instance: DagsterInstance, settings: Settings,
                    links: UiLinks) -> Alert | None:
    change = record.event_log_entry.dagster_event.event_specific_data
    state = str(getattr(change.new_state, "value", change.new_state))
    if state not in ALERTING_FRESHNESS_STATES:
        return None
    key = change.key
    latest = instance.get_latest_materialization_event(key)
    if latest is None:
        observed, run_id = "never materialized", None
    else:
        age = (datetime.now(UTC).timestamp() - latest.timestamp) / 3600
        at = datetime.fromtimestamp(latest.timestamp, UTC).isoformat(timespec="seconds")
        observed, run_id = f"last materialized {age:.1f} h ago ({at})", latest.run_id
    window = settings.automation.freshness.get(key.to_user_string())
    threshold = (f"warn after {_hours(window.warn_hours)}, fail after "
                 f"{_hours(window.fail_hours)}" if window else "its freshness policy")
    previous = str(getattr(change.previous_state, "value", change.previous_state))
    return Alert(
        kind="freshness", severity=state,
        summary=f"{key.to_user_string()} is stale: freshness {previous} -> {state}",
        url=links.asset(key), asset=key.to_user_string(), observed=observed,
        threshold=threshold, run_id=run_id, event_id=f"event:{record.storage_id}",
        details={"previous_state": previous, "new_state": state,
                 "changed_at": change.state_change_timestamp})


def run_failure_alert(record: EventLogRecord, instance: DagsterInstance,
                      links: UiLinks) -> Alert | None:
    """The alert for one RUN_FAILURE event (None if its run was deleted since)."""
    entry = record.event_log_entry
    run = instance.get_run_by_id(entry.run_id)
    if run is None:
        return None
    steps = [e.dagster_event.step_key for e in instance.all_logs(
        run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        if e.dagster_event is not None and e.dagster_event.step_key]
    # A job over all its assets has no asset selection; its asset steps are named after
    # their assets, so the failed steps name the assets then.
    assets = sorted(k.to_user_string() for k in (run.asset_selection or [])) or steps
    message = (entry.dagster_event.message if entry.dagster_event else None) or "the run failed"
    return Alert(
        kind="run_failed", severity="ERROR",
        summary=f"run of {run.job_name} failed: {message}",
        url=links.run(run.run_id), run_id=run.run_id,
        asset=", ".join(assets) or None,
        observed=f"failed steps: {', '.join(steps) or 'none (failed before any step)'}",
        threshold="a run must succeed",
        event_id=f"run:{run.run_id}",
        details={"job": run.job_name, "tags": dict(run.tags), "failed_steps": steps})


def _run_failures(instance: DagsterInstance, after: int, limit: int) -> list[EventLogRecord]:
    """RUN_FAILURE records of every run in the instance (one code location is deployed)
    after storage id `after`, oldest first."""
    return list(instance.fetch_run_status_changes(
        RunStatusChangeRecordsFilter(event_type=DagsterEventType.RUN_FAILURE,
                                     after_storage_id=after),
        limit=limit, ascending=True).records)


@dataclass
class AlertCursor:
    """Where the alert sensor stands: the last freshness event and run failure sent, and per
    check the failed executions already sent among its latest `window` (an execution is
    created when its run starts and fails later, so executions of one check can fail out of
    order). Run failures have their own storage ids (the run-status index of the event log)."""

    freshness_after: int
    runs_after: int | None = None  # None: not yet placed (a cursor written before runs)
    checks: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> AlertCursor:
        value = json.loads(raw)
        runs_after = value.get("runs_after")
        return cls(int(value["freshness_after"]),
                   None if runs_after is None else int(runs_after),
                   {str(k): [int(i) for i in ids] for k, ids in value["checks"].items()})

    def dump(self) -> str:
        return json.dumps({"freshness_after": self.freshness_after,
                           "runs_after": self.runs_after, "checks": self.checks},
                          sort_keys=True, separators=(",", ":"))

    def start_runs_from_now(self, instance: DagsterInstance) -> None:
        newest = instance.fetch_run_status_changes(DagsterEventType.RUN_FAILURE, limit=1).records
        self.runs_after = newest[0].storage_id if newest else 0


def failed_executions(instance: DagsterInstance, check_keys: Iterable[AssetCheckKey],
                      window: int) -> dict[str, list[AssetCheckExecutionRecord]]:
    """The failed executions among each check's latest `window`, oldest first."""
    failed = {}
    for key in check_keys:
        latest = instance.event_log_storage.get_asset_check_execution_history(key, limit=window)
        failed[key.to_user_string()] = sorted(
            (r for r in latest if r.status == AssetCheckExecutionRecordStatus.FAILED
             and r.event is not None), key=lambda r: r.id)
    return failed


def send_pending_alerts(instance: DagsterInstance, notifier: NotifierResource,
                        settings: Settings, check_keys: Sequence[AssetCheckKey],
                        raw_cursor: str | None) -> tuple[list[Alert], str, str]:
    """Send the alerts not sent yet; returns (sent, new cursor, note). On the first tick
    (no cursor) nothing is sent: alerts start from now, not the instance's history.

    No alert is started once the tick has run for the sensor's interval: channels that
    are slow but answer would otherwise hold one tick for an alert's deadline per alert.
    What is left waits for the next tick (the cursor stops before it)."""
    stop_at = time.monotonic() + settings.alerts.minimum_interval_seconds
    links = UiLinks(settings.alerts.ui_base_url)
    window = settings.alerts.max_events_per_tick
    failed = failed_executions(instance, check_keys, window)
    if not raw_cursor:
        cursor = AlertCursor(instance.event_log_storage.get_maximum_record_id() or 0,
                             checks={k: [r.id for r in rs] for k, rs in failed.items()})
        cursor.start_runs_from_now(instance)
        return [], cursor.dump(), "started: alerting on events from now on"
    cursor = AlertCursor.parse(raw_cursor)
    if cursor.runs_after is None:
        cursor.start_runs_from_now(instance)
    ledger = DeliveryLedger(instance)
    down: dict[str, str] = {}  # channels that failed this tick: not tried again until next
    waiting: set[str] = set()  # storage-id streams held at an alert some channel lacks
    sent: list[Alert] = []
    pending: list[tuple[str, Any]] = [
        (name, r) for name, records in failed.items()
        for r in records if r.id not in set(cursor.checks.get(name, []))]
    pending += [("freshness", r) for r in instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE,
                           after_cursor=cursor.freshness_after), limit=window, ascending=True)]
    pending += [("run", r) for r in _run_failures(instance, cursor.runs_after, window)]
    unsent = 0
    for index, (source, item) in enumerate(pending):
        if time.monotonic() >= stop_at:
            unsent = len(pending) - index
            break
        alert = (freshness_alert(item, instance, settings, links) if source == "freshness"
                 else run_failure_alert(item, instance, links) if source == "run"
                 else check_alert(item, links))
        if alert is not None:
            # Every alert is offered to the channels that are up, even while another is
            # down; what a channel lacks is sent on a later tick (the ledger skips the rest).
            try:
                if notifier.send(alert, ledger, down):
                    sent.append(alert)
            except NotifyError as exc:
                if exc.delivered:
                    sent.append(alert)
                waiting.add(source)  # a check's id stays out of the cursor: retried
                continue
        if source == "freshness":
            if source not in waiting:  # a high-water mark: never past an undelivered one
                cursor.freshness_after = item.storage_id
        elif source == "run":
            if source not in waiting:
                cursor.runs_after = item.storage_id
        else:
            cursor.checks.setdefault(source, []).append(item.id)
    note = "waiting for " + "; ".join(sorted(set(down.values()))) if down else ""
    if unsent:
        note = "; ".join(filter(None, [note, f"{unsent} events left for the next tick (this "
                                              "one ran for its interval)"]))
    return sent, _advanced(cursor, failed).dump(), note


def _advanced(cursor: AlertCursor, failed: Mapping[str, list[Any]]) -> AlertCursor:
    """Keep only ids still inside each check's window: the cursor stays small."""
    for name, ids in cursor.checks.items():
        in_window = {r.id for r in failed.get(name, [])}
        cursor.checks[name] = sorted(i for i in ids if i in in_window)
    return cursor


def _status(running: bool) -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED


def build_alert_sensors(settings: Settings) -> Sequence[SensorDefinition]:
    running = settings.automation.sensors_running

    @sensor(name="quality_alerts", default_status=_status(running),
            minimum_interval_seconds=settings.alerts.minimum_interval_seconds,
            description="One alert per failed asset check (blocking or not), freshness "
                        "change to WARN/FAIL, quarantined landing file and failed run.")
    def quality_alerts(context: SensorEvaluationContext, notifier: NotifierResource):
        check_keys = sorted(context.repository_def.asset_graph.asset_check_keys,
                            key=lambda k: k.to_user_string())
        sent, cursor, note = send_pending_alerts(context.instance, notifier, settings,
                                                 check_keys, context.cursor)
        if note:
            context.log.info(note)
        return SensorResult(
            skip_reason=None if sent else SkipReason(note or "no new failures"),
            cursor=cursor)

    return [quality_alerts]
