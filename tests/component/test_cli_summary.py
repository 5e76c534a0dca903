"""The `cli run` summary tells apart this run's results, an earlier run's, and an interrupt."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    asset,
    define_asset_job,
    execute_job,
    reconstructable,
)

from trending_assets.cli import summarize, was_interrupted

STARTED = Path(os.environ.get("TRENDING_TEST_STARTED_FLAG", "/nonexistent"))


def _register(instance: DagsterInstance, family: str, run_id: str, **metadata: object) -> None:
    instance.report_runless_asset_event(AssetMaterialization(
        f"registered_{family}_model", metadata={"dagster_run_id": run_id, **metadata}))


def test_a_version_registered_by_an_earlier_run_is_shown_as_held_not_as_missing() -> None:
    with DagsterInstance.ephemeral() as instance:
        _register(instance, "xgboost", "run-a", version=1, aliases=["production"])
        _register(instance, "bert", "run-b", version=None, decision="refused",
                  reason="macro_f1 0.41 below 0.50", aliases=[])

        rows = {row.model: row.version for row in summarize(instance, "run-b")}
        latest = {row.model: row.version for row in summarize(instance, None)}

    assert rows["xgboost"] == "v1 (production; from an earlier run)"
    assert rows["bert"] == "not registered (refused)"
    assert latest["xgboost"] == "v1 (production)"
    assert rows["reference"] == "not registered (baseline)"


@asset
def first() -> int:
    return 1


@asset
def slow(first: int) -> int:
    STARTED.write_text("started")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupted long before the deadline
        time.sleep(0.1)
    return first


def slow_job():
    return Definitions(assets=[first, slow], jobs=[define_asset_job("slow_job")]
                       ).resolve_job_def("slow_job")


def _interrupt_when(flag: Path, finished: threading.Event) -> None:
    """SIGINT this process once the slow step has started; never after the run ended (a
    step process can take a minute to start on a busy machine: no deadline of its own)."""
    while not flag.exists():
        if finished.wait(0.1):
            return
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.e2e  # two real runs with step processes: slow on a busy machine
def test_an_interrupted_run_is_told_from_a_failed_one(tmp_path: Path, monkeypatch) -> None:
    flag = tmp_path / "started"
    monkeypatch.setenv("TRENDING_TEST_STARTED_FLAG", str(flag))  # read by the step process
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    with DagsterInstance.from_config(str(home)) as instance:
        finished = threading.Event()
        threading.Thread(target=_interrupt_when, args=(flag, finished), daemon=True).start()
        result = execute_job(reconstructable(slow_job), instance, raise_on_error=False)
        finished.set()
        assert flag.exists()
        assert not result.success
        assert was_interrupted(result.all_events)

        failed = execute_job(reconstructable(failing_job), instance, raise_on_error=False)
        assert not failed.success
        assert not was_interrupted(failed.all_events)


@asset
def broken() -> int:
    raise RuntimeError("a real failure")


def failing_job():
    return Definitions(assets=[broken], jobs=[define_asset_job("failing_job")]
                       ).resolve_job_def("failing_job")
