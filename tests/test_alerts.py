"""Alert sensors: real Dagster events in a real instance, sent to an HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    Definitions,
    Output,
    RepositoryDefinition,
    SkipReason,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from resources.notify import Alert, NotifierChannel, NotifierResource, NotifyError
from trending_assets.automation.alerts import build_alert_sensors
from trending_assets.settings import load_settings

from .conftest import write_test_configs

UI = "http://dagster.example.test"


class AlertReceiver:
    """A webhook endpoint on loopback that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200:
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self, path: str = "/hook") -> list[dict]:
        return [p for where, p in self.received if where == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    server = AlertReceiver()
    yield server
    server.close()


def notifier_for(receiver: AlertReceiver) -> NotifierResource:
    return NotifierResource(channels=[
        NotifierChannel(kind="webhook", url=f"{receiver.url}/hook"),
        NotifierChannel(kind="slack", url=f"{receiver.url}/slack"),
        NotifierChannel(kind="log"),
    ], timeout_seconds=5)


@pytest.fixture
def settings(tmp_path: Path, tiny_bert_dir: Path):
    folder = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir, {
        "automation": {"freshness": {"gated": {"warn_hours": 1, "fail_hours": 2}}},
        "alerts": {"ui_base_url": UI}})
    return load_settings("local", folder)


@asset(check_specs=[AssetCheckSpec("score_floor", asset="gated", blocking=True)])
def gated():
    yield Output(1)
    yield AssetCheckResult(check_name="score_floor", passed=False,
                           severity=AssetCheckSeverity.ERROR,
                           description="macro_f1 0.210 < 0.300",
                           metadata={"macro_f1": 0.21, "min_macro_f1": 0.3})


@asset(deps=[gated])
def after_gate():
    return 2


@asset
def broken():
    raise RuntimeError("the synopsis table is empty")


class AlertTicker:
    """Ticks the quality_alerts sensor, keeping its cursor as the daemon does."""

    def __init__(self, instance: DagsterInstance, settings, notifier: NotifierResource,
                 repository: RepositoryDefinition | None = None):
        self.instance = instance
        self.notifier = notifier
        self.repository = repository or Definitions(assets=[gated, after_gate]
                                                    ).get_repository_def()
        self.sensor, self.run_failure = build_alert_sensors(settings)
        self.cursor: str | None = None

    def tick(self):
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       resources={"notifier": self.notifier},
                                       repository_def=self.repository)
        result = self.sensor(context)
        self.cursor = result.cursor
        return result


def test_failed_check_and_freshness_alert_once_each(receiver, settings):
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier_for(receiver))
        ticker.tick()  # the first tick starts at the present: no alerts on history
        result = materialize([gated, after_gate], instance=instance, raise_on_error=False)
        assert not result.success
        # what the daemon's freshness loop records when the policy's fail window passes
        instance._report_runless_asset_event(FreshnessStateChange(
            key=AssetKey("gated"), new_state=FreshnessState.FAIL,
            previous_state=FreshnessState.PASS, state_change_timestamp=0.0))
        instance._report_runless_asset_event(FreshnessStateChange(
            key=AssetKey("gated"), new_state=FreshnessState.PASS,
            previous_state=FreshnessState.FAIL, state_change_timestamp=1.0))

        ticker.tick()
        check, freshness = receiver.payloads()
        assert check["kind"] == "check_failed"
        assert check["asset"] == "gated" and check["check"] == "score_floor"
        assert check["observed"] == "macro_f1=0.21" and check["threshold"] == "min_macro_f1=0.3"
        assert check["run_id"] == result.run_id
        assert check["severity"] == "ERROR"
        assert check["url"] == f"{UI}/assets/gated?view=checks&checkDetail=score_floor"
        assert check["details"]["run_url"] == f"{UI}/runs/{result.run_id}"
        assert "blocking check score_floor on gated failed" in check["summary"]

        assert freshness["kind"] == "freshness" and freshness["severity"] == "FAIL"
        assert freshness["asset"] == "gated"
        assert freshness["threshold"] == "warn after 1 h, fail after 2 h"
        assert freshness["observed"].startswith("last materialized 0.0 h ago")
        assert freshness["run_id"] == result.run_id
        assert freshness["url"] == f"{UI}/assets/gated"

        slack = receiver.payloads("/slack")
        assert len(slack) == 2 and "score_floor" in slack[0]["text"]
        assert "macro_f1=0.21" in slack[0]["text"] and check["url"] in slack[0]["text"]

        # a restart: a new sensor object resuming from the stored cursor sends nothing again
        restarted = AlertTicker(instance, settings, notifier_for(receiver))
        restarted.cursor = ticker.cursor
        assert isinstance(restarted.tick().skip_reason, SkipReason)
        assert len(receiver.payloads()) == 2


def test_undelivered_alert_is_sent_on_a_later_tick(receiver, settings):
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier_for(receiver))
        ticker.tick()
        materialize([gated], instance=instance, raise_on_error=False)
        receiver.status = 503  # the channel is down
        ticker.tick()
        assert receiver.payloads() == []
        receiver.status = 200
        ticker.tick()
        assert [p["check"] for p in receiver.payloads()] == ["score_floor"]
        ticker.tick()
        assert len(receiver.payloads()) == 1


def test_failed_run_alert(receiver, settings):
    with instance_for_test() as instance:
        result = materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success
        _, run_failure = build_alert_sensors(settings)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alerts", dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run,
            resources={"notifier": notifier_for(receiver)},
        ).for_run_failure()
        run_failure(context)
        (alert,) = receiver.payloads()
        assert alert["kind"] == "run_failed"
        assert alert["run_id"] == result.run_id
        assert alert["url"] == f"{UI}/runs/{result.run_id}"
        assert alert["observed"] == "failed steps: broken"
        assert alert["asset"] == "broken"


def test_unreachable_channel_raises_naming_the_host_only():
    notifier = NotifierResource(channels=[NotifierChannel(
        kind="slack", url="http://127.0.0.1:9/services/T000/SECRET")], timeout_seconds=2)
    with pytest.raises(NotifyError) as error:
        notifier.send(Alert(kind="check_failed", severity="ERROR", summary="x", url="u"))
    assert "127.0.0.1:9" in str(error.value) and "SECRET" not in str(error.value)
