"""Sensors ticked by a test the way the Dagster daemon ticks them."""

from __future__ import annotations

from dagster import DagsterInstance, SensorResult, build_sensor_context

from resources.storage import ArtifactStoreResource
from trending_assets.automation.landing import build_landing_sensor
from trending_assets.settings import LandingSensorSettings


class Ticker:
    """Ticks a landing sensor the way the daemon does: the cursor is kept between ticks and
    the dynamic partitions each tick asks for are added."""

    def __init__(self, instance: DagsterInstance, resource: ArtifactStoreResource,
                 settings: LandingSensorSettings) -> None:
        self.instance = instance
        self.resource = resource
        self.sensor = build_landing_sensor(settings, running=False)
        self.cursor: str | None = None

    def tick(self) -> SensorResult:
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       resources={"landing": self.resource})
        result = self.sensor(context)
        assert isinstance(result, SensorResult)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name,
                                                 list(request.partition_keys))
        for event in result.asset_events:  # as the daemon records them
            self.instance.report_runless_asset_event(event)
        self.cursor = result.cursor
        return result
