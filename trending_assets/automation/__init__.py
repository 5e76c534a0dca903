"""Sensors, jobs and schedules: what starts runs."""
