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
        self.attempts = 0  # every POST, answered or refused
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
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


@pytest.fixture
def slack_receiver() -> Iterator[AlertReceiver]:
    """A second endpoint that can be down while the first is up."""
    server = AlertReceiver()
    yield server
    server.close()


def two_channels(webhook: AlertReceiver, slack: AlertReceiver) -> NotifierResource:
    return NotifierResource(channels=[
        NotifierChannel(kind="webhook", url=f"{webhook.url}/hook"),
        NotifierChannel(kind="slack", url=f"{slack.url}/slack"),
    ], timeout_seconds=5)


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
        (self.sensor,) = build_alert_sensors(settings)
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
        # The blocking check failed the run too: one alert each, the run's last.
        check, freshness, run = receiver.payloads()
        assert run["kind"] == "run_failed" and run["run_id"] == result.run_id
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
        assert len(slack) == 3 and "score_floor" in slack[0]["text"]
        assert "macro_f1=0.21" in slack[0]["text"] and check["url"] in slack[0]["text"]

        # a restart: a new sensor object resuming from the stored cursor sends nothing again
        restarted = AlertTicker(instance, settings, notifier_for(receiver))
        restarted.cursor = ticker.cursor
        assert isinstance(restarted.tick().skip_reason, SkipReason)
        assert len(receiver.payloads()) == 3


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
        assert [p["kind"] for p in receiver.payloads()] == ["check_failed", "run_failed"]
        assert receiver.payloads()[0]["check"] == "score_floor"
        ticker.tick()
        assert len(receiver.payloads()) == 2


def test_a_channel_that_is_down_neither_silences_nor_floods_the_others(
        receiver, slack_receiver, settings):
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, two_channels(receiver, slack_receiver))
        ticker.tick()
        receiver.status = 503  # the webhook (tried first) is down for three ticks
        failed_run = materialize([gated], instance=instance, raise_on_error=False)
        ticker.tick()
        # Two alerts (the failed check, then the run it failed): Slack gets both at once
        # and the dead webhook is tried once in the tick, not once per alert.
        assert [p["text"].split(":")[0] for p in slack_receiver.payloads("/slack")] == [
            "[ERROR] blocking check score_floor on gated failed", "[ERROR] run of "
            "__ephemeral_asset_job__ failed"]
        assert receiver.attempts == 1
        materialize([broken], instance=instance, raise_on_error=False)  # a new failure
        ticker.tick()
        ticker.tick()
        assert receiver.payloads() == [] and receiver.attempts == 3
        assert len(slack_receiver.payloads("/slack")) == 3  # the new one; none twice
        receiver.status = 200
        ticker.tick()
        ticker.tick()
        assert [p["kind"] for p in receiver.payloads()] == [
            "check_failed", "run_failed", "run_failed"]
        assert receiver.payloads()[1]["run_id"] == failed_run.run_id
        assert len(slack_receiver.payloads("/slack")) == 3


def test_a_tick_lost_after_delivery_sends_nothing_twice(receiver, settings):
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier_for(receiver))
        ticker.tick()
        materialize([gated], instance=instance, raise_on_error=False)
        stored = ticker.cursor
        ticker.tick()
        assert len(receiver.payloads()) == 2 and len(receiver.payloads("/slack")) == 2
        ticker.cursor = stored  # the daemon died after sending, before storing the tick
        ticker.tick()
        assert len(receiver.payloads()) == 2 and len(receiver.payloads("/slack")) == 2


def test_failed_run_alert_reaches_a_channel_that_was_down(receiver, slack_receiver,
                                                          settings):
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, two_channels(receiver, slack_receiver))
        failed_before = materialize([broken], instance=instance, raise_on_error=False)
        ticker.tick()  # starts from now: the failure before it is history
        result = materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success and not failed_before.success
        slack_receiver.status = 503
        ticker.tick()
        assert slack_receiver.payloads("/slack") == []
        slack_receiver.status = 200
        ticker.tick()
        ticker.tick()
        (slack,) = slack_receiver.payloads("/slack")
        assert result.run_id in slack["text"]
        (alert,) = receiver.payloads()  # the webhook had it the first time: not sent again
        assert alert["kind"] == "run_failed"
        assert alert["run_id"] == result.run_id
        assert alert["event_id"] == f"run:{result.run_id}"
        assert alert["url"] == f"{UI}/runs/{result.run_id}"
        assert alert["observed"] == "failed steps: broken"
        assert alert["asset"] == "broken"
        assert alert["summary"].startswith("run of __ephemeral_asset_job__ failed: ")


def test_a_cursor_written_before_run_alerts_starts_them_from_now(receiver, settings):
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier_for(receiver))
        ticker.tick()
        materialize([broken], instance=instance, raise_on_error=False)
        older = json.loads(ticker.cursor)
        del older["runs_after"]  # what a deployment upgraded from the previous release has
        ticker.cursor = json.dumps(older)
        ticker.tick()
        assert receiver.payloads() == []  # the failure before the upgrade is history
        result = materialize([broken], instance=instance, raise_on_error=False)
        ticker.tick()
        assert [p["run_id"] for p in receiver.payloads()] == [result.run_id]


def test_unreachable_channel_raises_naming_the_host_only():
    notifier = NotifierResource(channels=[NotifierChannel(
        kind="slack", url="http://127.0.0.1:9/services/T000/SECRET")], timeout_seconds=2)
    with pytest.raises(NotifyError) as error:
        notifier.send(Alert(kind="check_failed", severity="ERROR", summary="x", url="u"))
    assert "127.0.0.1:9" in str(error.value) and "SECRET" not in str(error.value)
