"""Test helpers shared across layers: plain functions and classes, no fixtures."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
