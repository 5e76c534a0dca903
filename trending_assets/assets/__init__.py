"""Thin asset functions: read inputs, call ml/, return results with lineage metadata."""
