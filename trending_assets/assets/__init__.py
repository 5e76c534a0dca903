"""Thin asset functions: read inputs, call ml/, return results with lineage metadata.

Catalog metadata shown in the Dagster UI lives on each asset's decorator: group, owners,
kinds, description, and a `code_version`. Code versions follow the Dagster convention: a
constant beside each asset that whoever changes what the asset computes bumps, so the UI
marks that asset and everything downstream of it as stale ("code version changed").
"""

# Owners as Dagster reads them (an email or "team:<name>"), shown and filterable in the UI.
DATA_OWNERS = ["team:data-platform"]
ML_OWNERS = ["team:ml"]
