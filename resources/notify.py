"""Alert delivery: Slack incoming webhooks, a generic JSON webhook, and the log.

An `Alert` says what happened in the terms a person acts on: the asset, the check, the
observed value against its threshold, the run, and a link to the page in the Dagster UI.
Every channel gets every alert once. A channel that cannot be reached does not stop the
others; `send` raises `NotifyError` after trying them all, so the sending sensor keeps the
event and tries again on its next tick. With a `DeliveryLedger` the retry goes only to the
channels that did not get the alert: a channel that is down for an hour does not flood the
others with the same alert every tick.

Channels are hostile ground: only http(s) URLs are used, each delivery has one deadline
for all of it, a reply is read only up to a cap, redirects are not followed, and no error
text names more of a URL than its scheme and host (user, password, path and query may be
secrets).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from dagster import Config, ConfigurableResource, DagsterInstance

# Validated where the configuration is: a channel in configs/ is checked at load time.
from trending_assets.settings.automation import channel_url_problem

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


def slack_text(text: str) -> str:
    """`text` without Slack's control sequences: `<...>` is a link or a mention there (a
    landing file named `<https://e|click>` would be a link), so `<` and `>` become entities.
    `&` stays: alone it starts no link, and the UI links keep their `&`."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


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


# Webhook replies are a word ("ok"); a reply is read no further than this.
MAX_REPLY_BYTES = 64 * 1024
def redacted(url: str, keep_path: bool = False) -> str:
    """The URL without user, password, query and fragment (and, unless `keep_path`, path):
    what error text and logs may show. A Slack webhook's path and a signed URL's query
    are its secret."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unreadable URL>"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path if keep_path else ''}"


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with each read bounded by what is left of one deadline: a socket
    timeout alone is per read, so a server answering a byte a second never trips it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_left(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """The part of a socket http.client uses once connected, every call by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_left(self._deadline))  # sendall's timeout is its total
        self._sock.sendall(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        # http.client closes the connection as soon as the reply's headers say it will end,
        # before the body is read; `_post_json` closes the socket when done with it.
        pass


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete reply before the deadline")
    return left


def _scrubbed(text: str, parts: SplitResult) -> str:
    """`text` without the URL's secret parts: http.client quotes a path it refuses."""
    for secret in (parts.path, parts.query, parts.username, parts.password):
        if secret and len(secret) > 1:
            text = text.replace(secret, "<redacted>")
    return text


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    """POST `payload` to `url` (checked by `channel_url_problem`); connecting, TLS,
    sending and the reply all end by one deadline `timeout` seconds from now. A redirect
    is a failure (never followed: it would turn the POST into a body-less GET)."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    headers = {"Content-Type": "application/json"}
    if parts.username is not None or parts.password is not None:
        token = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    where = redacted(url)
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=_left(deadline))
        try:
            if parts.scheme.lower() == "https":
                sock.settimeout(_left(deadline))  # the handshake's deadline
                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=parts.hostname)
            connection = http.client.HTTPConnection(parts.hostname, port)
            connection.sock = _DeadlineSocket(sock, deadline)  # type: ignore[assignment]
            connection.request("POST", target, json.dumps(payload, default=str).encode(),
                               headers)
            response = connection.getresponse()
            response.read(MAX_REPLY_BYTES)  # the rest is never read: the socket closes
        finally:
            sock.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        why = "no complete reply within the deadline" if isinstance(exc, TimeoutError) \
            else _scrubbed(f"{type(exc).__name__}: {exc}"[:300], parts)
        raise NotifyError(f"alert not delivered to {where} (timeout {timeout:g} s): {why}"
                          ) from None
    if 300 <= response.status < 400:
        location = urljoin(url, response.getheader("Location") or "")
        pointed = ("the same path over " + redacted(location)
                   if urlsplit(location).path == parts.path else redacted(location, True))
        raise NotifyError(f"alert not delivered to {where}: HTTP {response.status} redirect to "
                          f"{pointed} (not followed: give the channel the final URL)")
    if not 200 <= response.status < 300:
        raise NotifyError(f"alert not delivered to {where}: HTTP {response.status} "
                          f"{response.reason[:100]}")


class NotifierResource(ConfigurableResource):
    """Sends each alert to every configured channel, all at once: a slow channel holds up
    a send by at most `timeout_seconds` (each delivery's whole deadline), never the others."""

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
        due = [c for c in self.channels if c.channel_id not in done | set(down)]
        with ThreadPoolExecutor(max_workers=max(len(due), 1)) as pool:
            failures = list(pool.map(lambda channel: self._attempt(channel, alert), due))
        delivered = []
        for channel, failure in zip(due, failures, strict=True):
            if failure is None:
                done.add(channel.channel_id)
                delivered.append(channel.channel_id)
            else:
                down[channel.channel_id] = failure
        if event_id and delivered:
            ledger.record(event_id, done)
        missing = [down[c.channel_id] for c in self.channels if c.channel_id not in done]
        if missing:
            raise NotifyError("; ".join(missing), delivered)
        return delivered

    def _attempt(self, channel: NotifierChannel, alert: Alert) -> str | None:
        """Why the delivery failed, or None."""
        try:
            self._deliver(channel, alert)
        except NotifyError as exc:
            return str(exc)
        return None

    def _deliver(self, channel: NotifierChannel, alert: Alert) -> None:
        if channel.kind == "log":
            LOG.warning(alert.text())
        elif not channel.url:
            raise NotifyError(f"the {channel.kind} channel has no URL (its environment "
                              "variable is empty?)")
        elif problem := channel_url_problem(channel.url):
            # Checked when the configuration loads too; a URL from the environment only here.
            raise NotifyError(f"alert not sent: the {channel.kind} channel's URL {problem}")
        elif channel.kind == "slack":
            _post_json(channel.url, {"text": slack_text(alert.text())}, self.timeout_seconds)
        else:
            _post_json(channel.url, alert.as_json(), self.timeout_seconds)
