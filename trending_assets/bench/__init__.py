"""Benchmarks run from a terminal (`python -m trending_assets.bench.<name>`); not imported by
the pipeline."""
