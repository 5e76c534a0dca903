"""The `dg` CLI on this project ([tool.dg] in pyproject.toml) and `make ui`'s check before
`dg dev` (trending_assets/ui_check.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from tests.helpers import REPO
from trending_assets.ui_check import problems

BIN = Path(sys.executable).parent


def ui_check(port: int, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trending_assets.ui_check", "--port", str(port),
         "--dagster-home", str(home)], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_make_ui_refuses_a_taken_port_at_once(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        started = time.monotonic()
        taken = ui_check(port, tmp_path)
        assert time.monotonic() - started < 60  # no server start, no definitions loaded
        assert taken.returncode == 1
        assert taken.stderr == (
            f"make ui: port {port} on 127.0.0.1 is taken (another `make ui`?): open "
            f"http://127.0.0.1:{port}, or start on another port: make ui PORT={port + 1}\n")
    assert problems("127.0.0.1", port, tmp_path) == []  # closed: free again


def test_make_ui_refuses_a_second_daemon_on_the_same_instance(tmp_path):
    ours, other = tmp_path / "home", tmp_path / "other-home"
    ours.mkdir()
    other.mkdir()
    with socket.socket() as probe:  # a port nobody holds, so only the daemon is reported
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "--empty-workspace"],
        env={**os.environ, "DAGSTER_HOME": str(ours)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        refused = ui_check(port, ours)
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            f"make ui: a Dagster daemon (pid {daemon.pid}) already runs on this instance "
            f"({ours}); ")
        assert problems("127.0.0.1", port, other) == []  # another instance's daemon is fine
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    assert problems("127.0.0.1", port, ours) == []


def test_make_ui_checks_then_starts_dg_dev_on_the_given_port():
    planned = subprocess.run(["make", "-n", "ui", "PORT=3456"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    check = next(i for i, line in enumerate(lines) if "-m trending_assets.ui_check" in line)
    assert "--port 3456" in lines[check]
    assert lines[check + 1] == ".venv/bin/dg dev -h 127.0.0.1 -p 3456"


def test_dg_checks_lists_and_launches_on_a_fresh_instance(tmp_path, pipeline_env):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "APP_ENV": "local",
           "TRENDING_CONFIG_DIR": str(pipeline_env["config_dir"])}

    def dg(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "dg"), *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert "All definitions loaded successfully." in dg("check", "defs").stdout
    listing = dg("list", "defs", "--json").stdout
    for name in ("raw_titles", "data_splits", "train_models", "tune_xgboost",
                 "weekly_full_retrain", "landing_sensor"):
        assert f'"{name}"' in listing, name

    # data_splits needs training_data, which needs an ingested landing file: the sensor's
    # work (a partition per file) done by hand, then two launches.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("landing_files", ["batch-001.csv"])
    dg("launch", "--assets", "raw_titles", "--partition", "batch-001.csv")
    dg("launch", "--assets", "training_data,data_splits")
    with DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("data_splits"))
        rows = instance.get_latest_materialization_event(AssetKey("training_data"))
    assert event is not None and rows is not None
    # the 800 landed titles less those with no genre the taxonomy knows
    assert rows.asset_materialization.metadata["rows"].value == 699
    assert event.run_id == rows.run_id  # one launch built both
