"""Alert sensors: real Dagster events in a real instance, sent to an HTTP server on loopback."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
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
from tests.conftest import write_test_configs
from tests.helpers.alerts import AlertReceiver
from trending_assets.automation.alerts import build_alert_sensors
from trending_assets.definitions import build_resources
from trending_assets.settings import ConfigError, load_settings

UI = "http://dagster.example.test"


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


# --- hostile channels: slow, redirecting, huge, credentialed, not http -------------------


class Endpoint:
    """A loopback HTTP server answering every request with `respond(handler, endpoint)`,
    which writes the raw reply; records each request's method, path and headers."""

    def __init__(self, respond) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.stop = threading.Event()  # the fixture ends: stop writing
        self.finished = threading.Event()  # a handler has returned
        self.written = 0  # reply bytes the client accepted
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.requests.append((self.command, self.path, dict(self.headers)))
                endpoint.bodies.append(self.rfile.read(int(self.headers.get("Content-Length")
                                                            or 0)))
                try:
                    respond(self, endpoint)
                except OSError:  # the client hung up: what a deadline or a cap does
                    pass
                finally:
                    endpoint.finished.set()

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint_for():
    started: list[Endpoint] = []

    def start(respond) -> Endpoint:
        started.append(Endpoint(respond))
        return started[-1]

    yield start
    for endpoint in started:
        endpoint.close()


def one_byte_a_second(handler: BaseHTTPRequestHandler, endpoint: Endpoint) -> None:
    # 30 s of a reply that never completes: a timeout per socket read never trips on it.
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 30:
        if endpoint.stop.wait(1):
            return
        handler.wfile.write(bytes([byte]))


def huge_reply(handler: BaseHTTPRequestHandler, endpoint: Endpoint) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1500000000\r\n\r\n")
    chunk = b"x" * (1 << 20)
    while endpoint.written < 256 << 20 and not endpoint.stop.is_set():
        handler.wfile.write(chunk)
        endpoint.written += len(chunk)


def redirect(handler: BaseHTTPRequestHandler, endpoint: Endpoint) -> None:
    handler.wfile.write(f"HTTP/1.1 302 Found\r\nLocation: {endpoint.url}/elsewhere?sig=qsecret"
                        "\r\nContent-Length: 0\r\n\r\n".encode())


def answer_slowly(handler: BaseHTTPRequestHandler, endpoint: Endpoint) -> None:
    endpoint.stop.wait(1.5)  # well inside the deadline: every alert is delivered
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def refuse(handler: BaseHTTPRequestHandler, endpoint: Endpoint) -> None:
    handler.wfile.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")


ALERT = Alert(kind="check_failed", severity="ERROR", summary="x", url="u")


def test_a_channel_answering_a_byte_a_second_fails_at_the_deadline_not_the_tick(
        endpoint_for, slack_receiver, settings):
    slow = endpoint_for(one_byte_a_second)
    notifier = NotifierResource(channels=[
        NotifierChannel(kind="webhook", url=f"{slow.url}/hook"),
        NotifierChannel(kind="slack", url=f"{slack_receiver.url}/slack")], timeout_seconds=2)
    started = time.monotonic()
    with pytest.raises(NotifyError) as error:
        notifier.send(ALERT)
    assert 1.9 < time.monotonic() - started < 5
    assert str(error.value) == (f"alert not delivered to {slow.url} (timeout 2 s): no "
                                "complete reply within the deadline")
    assert error.value.delivered == [notifier.channels[1].channel_id]  # not held up

    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier)
        ticker.tick()
        materialize([gated], instance=instance, raise_on_error=False)
        started = time.monotonic()
        ticker.tick()  # two alerts: the slow channel costs one deadline in all
        assert time.monotonic() - started < 2 + 3
    assert [p["text"].split("\n")[0].split(":")[0] for p in slack_receiver.payloads(
        "/slack")] == ["[ERROR] x", "[ERROR] blocking check score_floor on gated failed",
        "[ERROR] run of __ephemeral_asset_job__ failed"]
    assert len(slow.requests) == 2  # once per send, once in the tick


def test_a_redirect_is_a_failure_naming_where_it_pointed(endpoint_for):
    moved = endpoint_for(redirect)
    notifier = NotifierResource(channels=[NotifierChannel(kind="webhook",
                                                          url=f"{moved.url}/hook")])
    with pytest.raises(NotifyError) as error:
        notifier.send(ALERT)
    assert str(error.value) == (
        f"alert not delivered to {moved.url}: HTTP 302 redirect to {moved.url}/elsewhere "
        "(not followed: give the channel the final URL)")
    assert [(method, path) for method, path, _ in moved.requests] == [("POST", "/hook")]


def test_a_huge_reply_is_read_no_further_than_the_cap(endpoint_for):
    huge = endpoint_for(huge_reply)
    notifier = NotifierResource(channels=[NotifierChannel(kind="webhook",
                                                          url=f"{huge.url}/hook")])
    assert notifier.send(ALERT) == [notifier.channels[0].channel_id]
    assert huge.finished.wait(30)  # the server's next write failed: the client hung up
    # what the loopback socket buffers hold besides the 64 KiB read, far from 1.5 GB
    assert huge.written < 32 << 20


def test_credentials_in_a_channel_url_are_sent_never_shown(endpoint_for, settings, caplog,
                                                           capfd):
    down = endpoint_for(refuse)
    secret_url = f"http://alice:pw-s3cret@{down.url.removeprefix('http://')}/hook?token=q-s3cret"
    notifier = NotifierResource(channels=[NotifierChannel(kind="webhook", url=secret_url)])
    caplog.set_level(logging.DEBUG)
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier)
        ticker.tick()
        materialize([gated], instance=instance, raise_on_error=False)
        note = ticker.tick().skip_reason.skip_message
        with pytest.raises(NotifyError) as error:
            notifier.send(ALERT)
    assert note == (f"waiting for alert not delivered to {down.url}: HTTP 503 "
                    "Service Unavailable")
    assert str(error.value) == note.removeprefix("waiting for ")
    (_, path, headers), *_ = down.requests
    assert path == "/hook?token=q-s3cret"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pw-s3cret").decode()
    # Python logging and the sensor's log (Dagster writes it to stderr)
    logged = caplog.text + capfd.readouterr().err
    assert "s3cret" not in logged and "alice" not in logged
    assert note in logged  # the log was captured: the check above can fail

    # a path http.client refuses is quoted in its error: not in ours
    notifier = NotifierResource(channels=[NotifierChannel(kind="webhook",
                                                          url=f"{down.url}/T0/se cret")])
    with pytest.raises(NotifyError) as error:
        notifier.send(ALERT)
    assert str(error.value) == (f"alert not delivered to {down.url} (timeout 10 s): InvalidURL: "
                                "URL can't contain control characters. '<redacted>' (found at "
                                "least ' ')")


@pytest.mark.parametrize("url", ["file:///etc/hostname", "data:text/plain,ok"])
def test_a_channel_that_is_not_http_is_refused_at_load_and_at_send(
        url, tmp_path, tiny_bert_dir, monkeypatch):
    folder = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir, {
        "alerts": {"channels": [{"kind": "log"}, {"kind": "webhook", "url": url}]}})
    with pytest.raises(ConfigError) as error:
        load_settings("local", folder)
    scheme = url.split(":")[0]
    assert (f"key 'alerts.channels.1.url': Value error, the channel URL must be an http:// "
            f"or https:// URL, not {scheme}") in str(error.value)

    # A URL from the environment is only known when the resource is built.
    monkeypatch.setenv("TEST_ALERT_URL", url)
    write_test_configs(folder, tmp_path / "root", tiny_bert_dir, {"alerts": {"channels": [
        {"kind": "webhook", "url_env": "TEST_ALERT_URL"}]}})
    # what a sensor gets: the resource with the variable resolved
    notifier = build_resources(load_settings("local", folder))["notifier"
                                                               ].process_config_and_initialize()
    with pytest.raises(NotifyError) as error:
        notifier.send(ALERT)
    assert str(error.value) == (f"alert not sent: the webhook channel's URL must be an http:// "
                                f"or https:// URL, not {scheme}: alerts are only ever POSTed")


def test_a_tick_starts_no_alert_after_its_interval(endpoint_for, tmp_path, tiny_bert_dir):
    slow = endpoint_for(answer_slowly)
    settings = load_settings("local", write_test_configs(
        tmp_path / "configs", tmp_path / "root", tiny_bert_dir, {
            "automation": {"freshness": {"gated": {"fail_hours": 2}}},
            "alerts": {"minimum_interval_seconds": 5}}))
    notifier = NotifierResource(channels=[NotifierChannel(kind="webhook", url=slow.url)],
                                timeout_seconds=5)
    with instance_for_test() as instance:
        ticker = AlertTicker(instance, settings, notifier)
        ticker.tick()
        for at in range(6):  # six alerts of 1.5 s each: 9 s, longer than the 5 s interval
            instance._report_runless_asset_event(FreshnessStateChange(
                key=AssetKey("gated"), new_state=FreshnessState.FAIL,
                previous_state=FreshnessState.PASS, state_change_timestamp=float(at)))
        started = time.monotonic()
        ticker.tick()
        first = len(slow.bodies)
        assert 1 <= first < 6 and time.monotonic() - started < 5 + 1.5 + 3
        for _ in range(5):  # each later tick sends what the one before left
            if len(slow.bodies) == 6:
                break
            ticker.tick()
        assert isinstance(ticker.tick().skip_reason, SkipReason)
    changed_at = [json.loads(body)["details"]["changed_at"] for body in slow.bodies]
    assert changed_at == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # each once, in order


def test_slack_text_shows_angle_brackets_literally(slack_receiver):
    notifier = NotifierResource(channels=[NotifierChannel(
        kind="slack", url=f"{slack_receiver.url}/slack")])
    notifier.send(Alert(kind="quarantined", severity="ERROR", url="u",
                        summary="landing file <https://e|click> & <!channel> quarantined"))
    (payload,) = slack_receiver.payloads("/slack")
    assert payload["text"].splitlines()[0] == (
        "[ERROR] landing file &lt;https://e|click&gt; & &lt;!channel&gt; quarantined")
