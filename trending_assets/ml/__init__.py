"""Plain-Python machine learning for Trending Now: no Dagster import anywhere below here."""
