"""Alert delivery: Slack incoming webhooks, a generic JSON webhook, and the log.

An `Alert` says what happened in the terms a person acts on: the asset, the check, the
observed value against its threshold, the run, and a link to the page in the Dagster UI.
Every channel gets every alert once. A channel that cannot be reached does not stop the
others; `send` raises `NotifyError` after trying them all, so the sending sensor keeps the
event and tries again on its next tick. With a `DeliveryLedger` the retry goes only to the
channels that did not get the alert: a channel that is down for an hour does not flood the
others with the same alert every tick.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dagster import Config, ConfigurableResource, DagsterInstance

LOG = logging.getLogger("trending_assets.alerts")


class NotifyError(RuntimeError):
    """An alert could not be delivered to a channel; `delivered` lists the channels that
    did get it in the same call."""

    def __init__(self, message: str, delivered: list[str] | None = None) -> None:
        super().__init__(message)
        self.delivered = delivered or []


@dataclass(frozen=True)
class Alert:
    kind: str  # check_failed, freshness, run_failed, quarantined, retrain_request_rejected
    severity: str  # ERROR, WARN, FAIL
    summary: str  # one line
    url: str  # the page in the Dagster UI
    asset: str | None = None
    check: str | None = None
    observed: str | None = None
    threshold: str | None = None
    run_id: str | None = None
    event_id: str | None = None  # stable id of the event alerted on (dedupe downstream)
    details: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The message as a person reads it (Slack, log)."""
        lines = [f"[{self.severity}] {self.summary}"]
        for label, value in (("asset", self.asset), ("check", self.check),
                             ("observed", self.observed), ("threshold", self.threshold),
                             ("run", self.run_id)):
            if value:
                lines.append(f"{label}: {value}")
        lines.append(self.url)
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class NotifierChannel(Config):
    kind: Literal["slack", "webhook", "log"]
    url: str | None = None

    @property
    def channel_id(self) -> str:
        """Names the channel in the ledger; the URL (a secret for Slack) only as a hash."""
        if self.url is None:
            return self.kind
        return f"{self.kind}:{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"


class DeliveryLedger:
    """Which channels already have an alert, by the alert's `event_id`, kept in the Dagster
    instance's key-value table (where the daemon keeps its own cursors; SQLite locally,
    PostgreSQL in a cluster). One small row per alerted event."""

    PREFIX = "trending/alert-delivered/"

    def __init__(self, instance: DagsterInstance) -> None:
        self._storage = instance.run_storage

    def delivered(self, event_id: str) -> set[str]:
        key = self.PREFIX + event_id
        return set(json.loads(self._storage.get_cursor_values({key}).get(key, "[]")))

    def record(self, event_id: str, channel_ids: set[str]) -> None:
        self._storage.set_cursor_values({self.PREFIX + event_id: json.dumps(sorted(channel_ids))})


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload, default=str).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        # The URL may carry a secret (Slack): name the host only.
        host = urllib.request.urlparse(url).netloc
        raise NotifyError(f"alert not delivered to {host}: {exc}") from exc


class NotifierResource(ConfigurableResource):
    """Sends each alert to every configured channel."""

    channels: list[NotifierChannel]
    timeout_seconds: float = 10.0

    def send(self, alert: Alert, ledger: DeliveryLedger | None = None,
             down: dict[str, str] | None = None) -> list[str]:
        """Deliver to every channel that does not have the alert yet (per `ledger`, when
        given and the alert has an `event_id`); return the channels delivered to now.

        A channel that fails is added to `down` (channel id -> why) and channels already
        there are not tried again: a sensor passing one `down` to all its sends waits for a
        dead endpoint once per tick, not once per alert. Raises `NotifyError` naming each
        channel that does not have the alert, after trying the others."""
        down = {} if down is None else down
        event_id = alert.event_id if ledger is not None else None
        done = ledger.delivered(event_id) if event_id else set()
        delivered = []
        for channel in self.channels:
            if channel.channel_id in done or channel.channel_id in down:
                continue
            try:
                self._deliver(channel, alert)
            except NotifyError as exc:
                down[channel.channel_id] = str(exc)
                continue
            done.add(channel.channel_id)
            delivered.append(channel.channel_id)
            if event_id:
                ledger.record(event_id, done)
        missing = [down[c.channel_id] for c in self.channels if c.channel_id not in done]
        if missing:
            raise NotifyError("; ".join(missing), delivered)
        return delivered

    def _deliver(self, channel: NotifierChannel, alert: Alert) -> None:
        if channel.kind == "log":
            LOG.warning(alert.text())
        elif not channel.url:
            raise NotifyError(f"the {channel.kind} channel has no URL (its environment "
                              "variable is empty?)")
        elif channel.kind == "slack":
            _post_json(channel.url, {"text": alert.text()}, self.timeout_seconds)
        else:
            _post_json(channel.url, alert.as_json(), self.timeout_seconds)
