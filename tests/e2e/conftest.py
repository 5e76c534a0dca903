"""The whole graph trained once for the test run, shared by the read-only end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.pipeline import GOVERNANCE_CONFIG, Pipeline, first_run

MODELS = ("trending-now-xgboost", "trending-now-bert")


@pytest.fixture(scope="session")
def trained_graph(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path,
                  netflix: pd.DataFrame) -> Iterator[Pipeline]:
    """800 real titles through the whole graph with the test configuration and tiny BERT; both
    families promoted to production on this first run. Read-only: a test that ingests, trains
    or moves an alias builds its own graph; the session's end checks nobody did."""
    with first_run(tmp_path_factory.mktemp("trained_graph"), tiny_bert_dir,
                   {"batch-001.csv": netflix.sample(800, random_state=0)},
                   GOVERNANCE_CONFIG) as graph:
        runs = graph.instance.get_runs_count()
        registered = {m: (graph.registry.versions(m), graph.registry.aliases(m)) for m in MODELS}
        yield graph
        assert graph.instance.get_runs_count() == runs, "a test ran on the shared trained graph"
        assert {m: (graph.registry.versions(m), graph.registry.aliases(m))
                for m in MODELS} == registered, "a test changed the shared registry"
