"""Two `cli run`s on one instance, and runs whose CLI process died."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, instance_for_test

from resources.storage import LocalArtifactStore
from tests.helpers import REPO
from trending_assets.stale_runs import HOST_TAG, PID_TAG, cli_process_tags, fail_dead_cli_runs


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trending_assets.cli", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(60)
    return done.pid


def started_run(instance: DagsterInstance, tags: dict[str, str]) -> DagsterRun:
    run = DagsterRun(job_name="ingest_landing_file", run_id=str(uuid.uuid4()),
                     status=DagsterRunStatus.STARTED, tags=tags)
    return instance.add_run(run)


def write_checkpoint(root: Path, run_id: str) -> Path:
    """A complete checkpoint slot as bert_model stores it under the artifact root."""
    slot = root / "checkpoints" / "bert" / run_id / "slot-0"
    slot.mkdir(parents=True)
    (slot / "model.safetensors").write_bytes(b"w" * 4096)
    (slot / "manifest.json").write_text(json.dumps(
        {"complete": True, "files": {"model.safetensors": {"sha256": "x"}}, "state": {}}))
    return slot


def test_two_cli_runs_at_once_one_refuses_and_the_instance_still_works(pipeline_env):
    home = pipeline_env["root"] / "home"  # fresh: the first process creates the instance
    env = {**os.environ, "DAGSTER_HOME": str(home), "APP_ENV": "local",
           "TRENDING_CONFIG_DIR": str(pipeline_env["config_dir"])}
    first, second = start_cli(env, "run"), start_cli(env, "run")
    outcomes = [(p.wait(900), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 3], outcomes
    (_, _, refused_err), = [o for o in outcomes if o[0] == 3]
    assert "not started: another `cli run` (pid " in refused_err
    assert "Traceback" not in refused_err
    (_, trained_out, _), = [o for o in outcomes if o[0] == 0]
    assert "landing files ingested: ['batch-001.csv']" in trained_out
    assert "succeeded" in trained_out

    # A run left STARTED by a process that was killed: the next `cli run` fails it and
    # discards its checkpoints; the instance answers as before.
    instance = DagsterInstance.from_config(str(home))
    dead = started_run(instance, {**cli_process_tags(), PID_TAG: str(dead_pid())})
    slot = write_checkpoint(pipeline_env["root"] / "artifacts", dead.run_id)
    instance.dispose()
    after = start_cli(env, "run")
    code, out, err = after.wait(900), *after.communicate()
    assert code == 0, out + err
    assert f"run {dead.run_id} was left STARTED by a `cli run` process that is gone" in out
    assert "nothing to retrain" in out
    assert "v1 (staging)" in out
    instance = DagsterInstance.from_config(str(home))
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert json.loads((slot / "manifest.json").read_text()) == {"complete": False}
    assert (slot / "model.safetensors").read_bytes() == b""
    instance.dispose()


def test_only_runs_of_dead_cli_processes_on_this_host_are_failed(tmp_path):
    store = LocalArtifactStore(tmp_path)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with instance_for_test() as instance:
            own = cli_process_tags()
            dead = started_run(instance, {**own, PID_TAG: str(dead_pid())})
            running = started_run(instance, {**own, PID_TAG: str(alive.pid)})
            elsewhere = started_run(instance, {PID_TAG: str(dead_pid()), HOST_TAG: "other"})
            untagged = started_run(instance, {})
            slot = write_checkpoint(tmp_path, dead.run_id)
            kept = write_checkpoint(tmp_path, running.run_id)

            assert fail_dead_cli_runs(instance, store) == [dead.run_id]

            status = {r.run_id: instance.get_run_by_id(r.run_id).status
                      for r in (dead, running, elsewhere, untagged)}
            assert status == {dead.run_id: DagsterRunStatus.FAILURE,
                              running.run_id: DagsterRunStatus.STARTED,
                              elsewhere.run_id: DagsterRunStatus.STARTED,
                              untagged.run_id: DagsterRunStatus.STARTED}
            assert json.loads((slot / "manifest.json").read_text()) == {"complete": False}
            assert (kept / "model.safetensors").read_bytes() == b"w" * 4096
            assert fail_dead_cli_runs(instance, store) == []  # already failed
    finally:
        alive.kill()
        alive.wait(60)
