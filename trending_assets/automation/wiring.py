"""What definitions.py takes from automation: automated assets, sensors, schedules, resources."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dagster import (
    AssetsDefinition,
    EnvVar,
    ScheduleDefinition,
    SensorDefinition,
)

from resources.notify import NotifierChannel, NotifierResource
from resources.storage import ArtifactStoreResource
from trending_assets.automation.alerts import build_alert_sensors
from trending_assets.automation.conditions import automate, build_automation_sensor
from trending_assets.automation.landing import build_landing_sensor
from trending_assets.automation.requests import build_request_sensor, triggers_uri
from trending_assets.automation.schedules import build_schedules
from trending_assets.settings import Settings


@dataclass(frozen=True)
class Automation:
    assets: list[AssetsDefinition]
    sensors: list[SensorDefinition]
    schedules: list[ScheduleDefinition]


def build_automation(assets: Sequence[AssetsDefinition], settings: Settings) -> Automation:
    sensors = [
        build_landing_sensor(settings.automation.landing, settings.automation.sensors_running),
        build_request_sensor(settings),
        *build_alert_sensors(settings),
    ]
    automation_sensor = build_automation_sensor(assets, settings)
    if automation_sensor is not None:
        sensors.append(automation_sensor)
    return Automation(automate(assets, settings), sensors, build_schedules(settings))


def notifier_resource(settings: Settings) -> NotifierResource:
    # A URL from the environment is resolved by Dagster when the resource is built, so the
    # secret never appears in the UI or the run config.
    return NotifierResource(
        channels=[NotifierChannel(kind=c.kind,
                                  url=EnvVar(c.url_env) if c.url_env else c.url)
                  for c in settings.alerts.channels],
        timeout_seconds=settings.alerts.timeout_seconds)


def automation_resources(settings: Settings) -> dict[str, object]:
    return {
        "notifier": notifier_resource(settings),
        "retrain_requests": ArtifactStoreResource(
            uri=triggers_uri(settings), s3_endpoint_url=settings.storage.s3_endpoint_url),
    }
