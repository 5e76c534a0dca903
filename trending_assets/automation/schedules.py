"""Schedules: the weekly full retrain (`automation.weekly_retrain_cron`)."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from trending_assets.automation.jobs import training_job
from trending_assets.automation.requests import REASON_TAG
from trending_assets.settings import Settings


def build_schedules(settings: Settings) -> list[ScheduleDefinition]:
    """The weekly full retrain of train_models, or none when no cron is configured."""
    cron = settings.automation.weekly_retrain_cron
    if not cron:
        return []
    return [ScheduleDefinition(
        name="weekly_full_retrain", job=training_job, cron_schedule=cron,
        execution_timezone=settings.automation.timezone,
        default_status=DefaultScheduleStatus.RUNNING if settings.automation.sensors_running
        else DefaultScheduleStatus.STOPPED,
        tags={REASON_TAG: "weekly full retrain", "trending/trigger": "schedule"},
        description="The whole training graph on every accepted batch, whatever arrived.")]
