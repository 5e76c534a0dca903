"""Alert delivery: Slack incoming webhooks, a generic JSON webhook, and the log.

An `Alert` says what happened in the terms a person acts on: the asset, the check, the
observed value against its threshold, the run, and a link to the page in the Dagster UI.
Every channel gets every alert; a channel that cannot be reached raises `NotifyError`, so
the sending sensor keeps the event and tries again on its next tick.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dagster import Config, ConfigurableResource

LOG = logging.getLogger("trending_assets.alerts")


class NotifyError(RuntimeError):
    """An alert could not be delivered to a channel."""


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

    def send(self, alert: Alert) -> None:
        for channel in self.channels:
            if channel.kind == "log":
                LOG.warning(alert.text())
            elif not channel.url:
                raise NotifyError(f"the {channel.kind} channel has no URL (its environment "
                                  "variable is empty?)")
            elif channel.kind == "slack":
                _post_json(channel.url, {"text": alert.text()}, self.timeout_seconds)
            else:
                _post_json(channel.url, alert.as_json(), self.timeout_seconds)
