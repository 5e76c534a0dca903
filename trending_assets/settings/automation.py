"""When runs start (sensors, schedules, retrain requests) and who hears about problems."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from trending_assets.settings.base import _Strict

CHANNEL_SCHEMES = ("http", "https")


def channel_url_problem(url: str) -> str | None:
    """Why `url` cannot be an alert channel (None: it can). Only http(s) to a host: a
    `file:` or `data:` URL would "deliver" without sending anything."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in CHANNEL_SCHEMES:
        return (f"must be an http:// or https:// URL, not {parts.scheme or 'a bare'}: "
                "alerts are only ever POSTed")
    if not parts.hostname:
        return "names no host"
    return None


class LandingSensorSettings(_Strict):
    """How the landing sensor lists the landing area (see trending_assets/automation/landing.py)."""

    layout: Literal["flat", "dated"] = Field(
        "flat", description="flat: every file directly under the landing area (each tick lists "
                            "it all; for a local folder); dated: files under a date folder "
                            "(`date_format`) and a tick lists only the last `lookback_days`")
    date_format: str = Field("%Y-%m-%d", description="strftime of the date folder (UTC)")
    lookback_days: int = Field(
        1, ge=0, le=31, description="dated layout: date folders listed besides today's")
    page_size: int = Field(1000, ge=1, le=1000, description="keys per S3 LIST request")
    max_runs_per_tick: int = Field(
        1000, ge=1, description="new files beyond this wait for the next tick")
    minimum_interval_seconds: int = Field(30, ge=5)


class RetrainSettings(_Strict):
    """When newly accepted landing data retrains the graph below raw_titles."""

    min_new_rows: int = Field(
        1000, ge=1, description="accepted rows landed since training_data last materialized")
    max_wait_minutes: int | None = Field(
        1440, ge=1, description="fewer new rows still retrain once the oldest waited this "
                                "long; empty = only `min_new_rows` triggers")
    min_interval_minutes: int = Field(
        60, ge=0, description="no automatic retrain sooner than this after the last attempt")


class FreshnessWindow(_Strict):
    warn_hours: float | None = Field(None, gt=0)
    fail_hours: float = Field(gt=0)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> FreshnessWindow:
        if self.warn_hours is not None and self.warn_hours >= self.fail_hours:
            raise ValueError(f"warn_hours ({self.warn_hours}) must be below fail_hours "
                             f"({self.fail_hours})")
        return self


class RetrainRequestSettings(_Strict):
    uri: str | None = Field(
        None, description="where retrain requests (JSON) are written: a folder or s3:// prefix; "
                          "empty = <storage.root>/triggers")
    minimum_interval_seconds: int = Field(30, ge=5)
    max_request_bytes: int = Field(
        65_536, ge=1024, le=16 * 2**20,
        description="a larger request file is rejected without being parsed")
    model_paths: tuple[str, ...] = Field(
        (), description="base-model locations a request may set as bert.model_path, besides "
                        "the configured one: absolute folders or s3:// prefixes; a location "
                        "inside one is allowed too")

    @field_validator("model_paths")
    @classmethod
    def _absolute_locations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        relative = [v for v in value if not (v.startswith("s3://") or Path(v).is_absolute())]
        if relative:
            raise ValueError(f"use absolute folders or s3:// prefixes, not {relative}")
        return value


class AutomationSettings(_Strict):
    sensors_running: bool = Field(
        False, description="sensors, the automation sensor and schedules start RUNNING")
    landing: LandingSensorSettings = LandingSensorSettings()
    retrain: RetrainSettings = RetrainSettings()
    propagate: bool = Field(
        True, description="declarative automation below raw_titles (else schedules and "
                          "requests only)")
    on_demand_assets: tuple[str, ...] = Field(
        ("xgboost_hyperparameters",),
        description="assets below raw_titles that automation never materializes")
    automation_interval_seconds: int = Field(60, ge=5)
    freshness: dict[str, FreshnessWindow] = Field(
        default_factory=dict, description="asset name -> time window it must update within")
    weekly_retrain_cron: str | None = Field(
        "0 3 * * 1", description="cron of the full retrain schedule; empty = no schedule")
    timezone: str = "UTC"
    retrain_requests: RetrainRequestSettings = RetrainRequestSettings()


class AlertChannel(_Strict):
    kind: Literal["slack", "webhook", "log"]
    url: str | None = Field(None, description="webhook URL written in the config")
    url_env: str | None = Field(
        None, description="or the environment variable holding it (secrets stay out of YAML)")

    @model_validator(mode="after")
    def _has_target(self) -> AlertChannel:
        if self.kind != "log" and not (self.url or self.url_env):
            raise ValueError(f"a {self.kind} channel needs `url` or `url_env`")
        return self

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        problem = None if url is None else channel_url_problem(url)
        if problem:
            raise ValueError(f"the channel URL {problem}")
        return url


class AlertSettings(_Strict):
    channels: tuple[AlertChannel, ...] = (AlertChannel(kind="log"),)
    ui_base_url: str = Field("http://127.0.0.1:3000", description="links in alert messages")
    timeout_seconds: float = Field(
        10.0, gt=0, description="per delivery, for all of it: connect, send, whole reply")
    minimum_interval_seconds: int = Field(30, ge=5)
    max_events_per_tick: int = Field(
        200, ge=1, description="per tick: freshness events read, and latest executions of "
                               "each check looked at (failures beyond it between two ticks "
                               "are not alerted)")

