"""External retrain requests (the weekly full retrain is in schedules.py).

A monitoring system that sees the production model degrade asks for a retrain by writing a
small JSON file under `<triggers>/requests/` (`automation.retrain_requests.uri`; default
`<storage.root>/triggers`):

    {"reason": "production macro-F1 fell to 0.31", "requested_by": "model-monitor",
     "families": ["xgboost"],                                  optional, default all
     "overrides": {"xgboost": {"learning_rate": 0.1}},         optional hyperparameters
     "data_version": "3f2a..."}                                optional, see below

The `retrain_requests` sensor validates each request. A valid one launches the training
graph (the families asked for, the reference model always, as it is every report's
baseline) with the overrides as the settings resource's run config and the reason,
requester and request file as run tags. `data_version` pins the training data: the request
is accepted only if it is the data version of the current training_data and that version
passed its blocking checks; it is then reused as is (the run starts at data_splits);
without it training_data is rebuilt from every accepted batch. A malformed request is
rejected with an alert and never stops the sensor. A rejected request moves to
`<triggers>/processed/` with its outcome at once; an accepted one stays in `requests/`
until its run exists in the instance (it is asked for again with the same run key
meanwhile, which Dagster launches once), then moves there with the run's id: a daemon that
dies between the tick and the launch loses no request.

`python -m trending_assets.automation.requests submit ...` writes a request (the manual,
parameterized run); the README shows the same launch through the GraphQL API.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import RUN_KEY_TAG  # the tag the daemon sets; no public export
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from resources.landing_reader import read_bounded
from resources.listing import is_upload_leftover, lister_for
from resources.notify import Alert, DeliveryLedger, NotifierResource, NotifyError
from resources.safe_keys import unsafe_key_reason
from resources.storage import ArtifactStore, ArtifactStoreResource
from trending_assets.automation.alerts import UiLinks
from trending_assets.automation.jobs import training_job
from trending_assets.checks.data_quality import TrainingDataBlocked, require_training_data_passed
from trending_assets.exits import exit_on_config_error
from trending_assets.ml.families import names, registered_names, sections
from trending_assets.settings import ConfigError, Settings, load_settings

REQUESTS_PREFIX = "requests/"
PROCESSED_PREFIX = "processed/"
FAMILIES = names()  # from the family registry (ml/families.py), in its order
REASON_TAG = "trending/retrain_reason"
REQUESTED_BY_TAG = "trending/requested_by"
REQUEST_TAG = "trending/retrain_request"


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, max_length=500)
    requested_by: str = Field(min_length=1, max_length=200)
    # Checked against the registry as it is when a request is read, not when imported.
    families: tuple[str, ...] = Field(default_factory=names, min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)
    data_version: str | None = Field(None, min_length=1)

    @field_validator("families")
    @classmethod
    def _registered_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in value if f not in names()]
        if unknown:
            raise ValueError(f"unknown model family {', '.join(map(repr, unknown))}: use "
                             f"{', '.join(map(repr, names()))}")
        return value

    @field_validator("overrides")
    @classmethod
    def _hyperparameters_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        other = sorted(set(value) - set(sections()))
        if other:
            raise ValueError(f"only hyperparameter sections may be overridden "
                             f"({', '.join(sections())}), not {other}")
        return value


class RequestRejected(ValueError):
    """A retrain request that cannot be run; the message says what to fix."""


def parse_request(data: bytes, settings: Settings) -> RetrainRequest:
    """Validate a request file, including its overrides against the configuration (whose
    bounds apply to every hyperparameter) and the base-model locations it allows."""
    limit = settings.automation.retrain_requests.max_request_bytes
    if len(data) > limit:
        raise RequestRejected(request_too_large(len(data), limit))
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestRejected(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise RequestRejected(f"must be a JSON object, not {type(raw).__name__}")
    try:
        request = RetrainRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestRejected("; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<top level>'}: {e['msg']}"
            for e in exc.errors())) from exc
    if request.overrides:
        try:
            requested = load_settings(settings.environment, settings.config_dir,
                                      request.overrides)
        except ConfigError as exc:
            raise RequestRejected(f"overrides: {exc}") from exc
        if "model_path" in (request.overrides.get("bert") or {}):
            _require_allowed_model_path(requested.bert.model_path, settings)
    return request


def request_too_large(size: int, limit: int) -> str:
    return (f"the request file is {size:,} bytes, over automation.retrain_requests."
            f"max_request_bytes ({limit:,}); a request is a small JSON object")


def _inside(location: str, allowed: str) -> bool:
    return location == allowed or location.startswith(allowed.rstrip("/") + "/")


def _require_allowed_model_path(location: str | None, settings: Settings) -> None:
    """A request may train from the configured base model or a listed location only: any
    other folder or bucket is code and data nobody vetted."""
    if location == settings.bert.model_path:
        return
    allowed = settings.automation.retrain_requests.model_paths
    if location is not None and any(_inside(location, a) for a in allowed):
        return
    shown = location if location is not None else "null (the bundled model)"
    raise RequestRejected(
        f"overrides: bert.model_path {shown} is not an allowed base-model location: use the "
        f"configured one ({settings.bert.model_path or 'the bundled model'}) or one under "
        f"automation.retrain_requests.model_paths ({', '.join(allowed) or 'none listed'})")


def current_data_version(instance: DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(AssetKey("training_data"))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("data_version")
    return None if value is None else str(value.value)


def training_selection(families: Sequence[str], rebuild_data: bool) -> list[AssetKey]:
    """The training graph for `families`; the reference model is every report's baseline."""
    names = ["data_splits", "tfidf_features", "reference_model", "reference_evaluation"]
    if rebuild_data:
        names.insert(0, "training_data")
    for family in registered_names():
        if family in families:
            names += [f"{family}_model", f"{family}_evaluation", f"registered_{family}_model"]
    return [AssetKey(n) for n in names]


def settings_run_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """Run config that gives the settings resource a per-run overlay."""
    return {"resources": {"settings": {"config": {
        "overrides_json": json.dumps(overrides, sort_keys=True)}}}}


def request_run_key(key: str, etag: str) -> str:
    """One run per request file content: a re-upload with new content is a new request."""
    return f"retrain-request:{key}@{etag}"


def request_run(request: RetrainRequest, key: str, etag: str,
                instance: DagsterInstance) -> RunRequest:
    if request.data_version is not None:
        current = current_data_version(instance)
        if request.data_version != current:
            raise RequestRejected(
                f"data_version {request.data_version!r} is not the current training data "
                f"({current!r}); only the current version can be reused. Leave data_version "
                "out to rebuild the training data from every accepted batch.")
        try:
            require_training_data_passed(instance)
        except TrainingDataBlocked as exc:
            raise RequestRejected(f"data_version {request.data_version!r}: {exc}") from exc
    return RunRequest(
        run_key=request_run_key(key, etag),
        asset_selection=training_selection(request.families, request.data_version is None),
        run_config=settings_run_config(request.overrides),
        tags={REASON_TAG: request.reason, REQUESTED_BY_TAG: request.requested_by,
              REQUEST_TAG: key, "trending/trigger": "retrain-request"})


def _record_outcome(store: ArtifactStore, key: str, data: bytes, outcome: dict[str, Any]) -> None:
    name = key.removeprefix(REQUESTS_PREFIX)
    if unsafe_key_reason(name) is not None:  # recorded under a name that stays in processed/
        name = f"unsafe-name-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    store.put_bytes(f"{PROCESSED_PREFIX}{name}.{stamp}.json", json.dumps(
        {**outcome, "request_file": store.uri_of(key),
         "request": data.decode("utf-8", "replace"),
         "processed_at": datetime.now(UTC).isoformat()}, indent=2).encode())
    store.delete(key)


def rejection_alert(store: ArtifactStore, key: str, etag: str, problem: str,
                    links: UiLinks) -> Alert:
    """The alert for a rejected request; a new file later stored under the same name is a
    new request (another change tag), alerted on again."""
    return Alert(
        kind="retrain_request_rejected", severity="ERROR",
        summary=f"retrain request {key} rejected: {problem}",
        url=f"{links.base}/automation", observed=problem,
        threshold="a request is a JSON object: reason, requested_by, optional families, "
                  "overrides (hyperparameter sections), data_version",
        event_id=f"request:{store.uri_of(key)}@{etag}", details={"request_file": store.uri_of(key)})


def process_requests(store: ArtifactStore, instance: DagsterInstance, settings: Settings,
                     notifier: NotifierResource) -> tuple[list[RunRequest], list[str]]:
    """Run requests for the valid pending requests; alerts for the rejected ones."""
    runs, rejected = [], []
    links = UiLinks(settings.alerts.ui_base_url)
    ledger, down = DeliveryLedger(instance), {}  # a dead channel is tried once per tick
    limit = settings.automation.retrain_requests.max_request_bytes
    # Hidden names too, so that `requests/../x` is rejected and said, not passed over.
    for obj in lister_for(store).list(REQUESTS_PREFIX, leftovers=True):
        name = obj.key.removeprefix(REQUESTS_PREFIX)
        unsafe = unsafe_key_reason(name)
        if unsafe is None and is_upload_leftover(name):
            continue  # an upload in progress
        stored = read_bounded(store, obj.key, limit)
        data = stored.data
        run_key = request_run_key(obj.key, obj.etag)
        launched = instance.get_runs(RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
        if launched:  # asked for on an earlier tick and launched: done
            _record_outcome(store, obj.key, data, {"status": "accepted", "run_key": run_key,
                                                   "run_id": launched[0].run_id})
            continue
        try:
            if unsafe is not None:
                raise RequestRejected(f"the request file name {name!r} is refused: {unsafe}")
            if not stored.complete:
                raise RequestRejected(request_too_large(stored.size, limit))
            run = request_run(parse_request(data, settings), obj.key, obj.etag, instance)
        except Exception as exc:  # any bad request is rejected, never the sensor's failure
            problem = (str(exc) if isinstance(exc, RequestRejected)
                       else f"{type(exc).__name__}: {exc}")
            try:
                notifier.send(rejection_alert(store, obj.key, obj.etag, problem, links),
                              ledger, down)
            except NotifyError:
                continue  # kept in requests/: rejected (and alerted) on a later tick
            _record_outcome(store, obj.key, data, {"status": "rejected", "problem": problem})
            rejected.append(obj.key)
            continue
        runs.append(run)  # stays in requests/ until its run exists
    return runs, rejected


def build_request_sensor(settings: Settings) -> SensorDefinition:
    @sensor(
        name="retrain_requests", job=training_job,
        default_status=DefaultSensorStatus.RUNNING if settings.automation.sensors_running
        else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=settings.automation.retrain_requests.minimum_interval_seconds,
        description="Launches the training graph for each valid retrain request (JSON under "
                    "the triggers prefix) and rejects malformed ones with an alert.",
    )
    def retrain_requests(context: SensorEvaluationContext, retrain_requests: ArtifactStoreResource,
                         notifier: NotifierResource):
        runs, rejected = process_requests(retrain_requests.open(), context.instance, settings,
                                          notifier)
        if not runs:
            return SkipReason(f"rejected {rejected}" if rejected else "no retrain requests")
        return SensorResult(run_requests=runs)

    return retrain_requests


def triggers_uri(settings: Settings) -> str:
    default = f"{settings.storage.root.rstrip('/')}/triggers"
    return settings.automation.retrain_requests.uri or default


def _json_object(text: str) -> dict[str, Any]:
    """--overrides: a JSON object, or a usage error that says what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not JSON ({exc.msg} at character {exc.pos}): {text!r}; quote it for the shell, "
            """e.g. '{"xgboost": {"max_depth": 6}}'""") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of sections, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trending_assets.automation.requests",
        description="Write a retrain request; the retrain_requests sensor launches it.")
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit")
    submit.add_argument("--reason", required=True)
    submit.add_argument("--requested-by", required=True)
    submit.add_argument("--family", action="append", choices=FAMILIES,
                        help="repeat for several; default all")
    submit.add_argument("--overrides", type=_json_object, default={},
                        help='hyperparameters as JSON, e.g. \'{"xgboost": {"max_depth": 6}}\'')
    submit.add_argument("--data-version", help="reuse this (current) training data version")
    args = parser.parse_args(argv)
    return exit_on_config_error(lambda: submit_request(args))


def submit_request(args: argparse.Namespace) -> int:
    """Write the request `submit` describes, after checking it as the sensor will."""
    settings = load_settings()
    body = {"reason": args.reason, "requested_by": args.requested_by,
            "overrides": args.overrides}
    if args.family:
        body["families"] = args.family
    if args.data_version:
        body["data_version"] = args.data_version
    data = json.dumps(body, indent=2).encode()
    try:
        parse_request(data, settings)
    except RequestRejected as exc:
        print(f"not written: {exc}", file=sys.stderr)
        return 2
    store = ArtifactStoreResource(uri=triggers_uri(settings),
                                  s3_endpoint_url=settings.storage.s3_endpoint_url).open()
    key = f"{REQUESTS_PREFIX}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.json"
    store.put_bytes(key, data)
    print(f"written: {store.uri_of(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
