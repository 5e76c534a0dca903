"""The Great Expectations 1.x runtime: one ephemeral (in-memory) context per process, created
on first use (importing GX takes seconds), with a pandas data source and a whole-dataframe
batch definition; suites run as a `ValidationDefinition` with the frame as batch parameter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import cache
from types import SimpleNamespace
from typing import Any

import pandas as pd

# Great Expectations 1.x sends usage analytics (to a remote endpoint) unless this is set
# before `great_expectations` is first imported; pipeline pods and CI have no business
# phoning home. setdefault keeps an explicit opt-in by the operator working.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Each expectation carries its check's key in its meta, so results map back to checks.
META_KEY = "trending_check"


def _quiet_gx_logging(*, after_import: bool) -> None:
    """Keep GX's DEBUG/INFO chatter (metric registry, type lookups) out of the run's logs.

    The outcomes carry what matters. A level someone configured on purpose is left alone.
    """
    root = logging.getLogger("great_expectations")
    if root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    if after_import:
        # This module sets INFO on its own logger at import ("Created temporary directory
        # ... for ephemeral docs site" on every ephemeral context).
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


@cache
def gx_runtime() -> SimpleNamespace:
    """GX, its expectations module, the context, the batch definition and the cached
    validation definitions of this process."""
    _quiet_gx_logging(after_import=False)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx_logging(after_import=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas("trending")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    return SimpleNamespace(gx=gx, gxe=gxe, context=context, batch=batch_definition,
                           validations={})


def warm_up() -> None:
    """Import GX and create the context now (a one-off cost of a few seconds per process)."""
    gx_runtime()


def validation_definition(name: str, expectations: list[Any]) -> Any:
    """A suite named `name` with `expectations`, added to the context, on the frame batch."""
    g = gx_runtime()
    suite = g.context.suites.add(g.gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return g.gx.ValidationDefinition(data=g.batch, suite=suite, name=name)


def run_validation(validation: Any, frame: pd.DataFrame,
                   result_format: dict[str, Any]) -> list[Any]:
    """The expectation results of running `validation` on `frame`."""
    return list(validation.run(batch_parameters={"dataframe": frame},
                               result_format=result_format).results)


def exception_message(result: Any) -> str | None:
    """Why GX could not evaluate an expectation, or None when it did."""
    info = result.exception_info or {}
    if not isinstance(info, Mapping):
        return None
    # Either one {raised_exception, exception_message} dict, or one per failed metric.
    candidates = [info] if "raised_exception" in info else list(info.values())
    for entry in candidates:
        if isinstance(entry, Mapping) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "exception while validating")
    return None
