"""A real Dagster webserver on a loopback port, against a test instance and test configs.

Shared by the browser test and the GraphQL client test (one server per test session, see
the `dagster_ui` fixture in conftest.py). Runs launched from the UI or through GraphQL
start right away (DefaultRunCoordinator: no daemon needed) in a subprocess of the
webserver, with the same test configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from dagster import DagsterInstance
from dagster_graphql import DagsterGraphQLClient

from tests.conftest import write_test_configs
from tests.helpers import REPO
from tests.helpers.ports import free_port

# Screenshots and the webserver log land here (gitignored); `make screenshots` copies the
# README's pictures from here to docs/screenshots/.
ARTIFACTS = REPO / "test-artifacts" / "ui"
LOCATION = "trending_assets.definitions"
GOOD_BATCH = "batch-001.csv"
BAD_BATCH = "batch-002-podcasts.csv"
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240

INSTANCE_YAML = {
    "telemetry": {"enabled": False},
    # Launch runs at once (the local default queues them for the daemon of `dagster dev`).
    "run_coordinator": {"module": "dagster._core.run_coordinator",
                        "class": "DefaultRunCoordinator"},
}

LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
CHECK_EXECUTIONS = """
query Checks($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 5) {
    runId status partition
    evaluation { success severity description partition
                 metadataEntries { label ... on FloatMetadataEntry { floatValue }
                                          ... on TextMetadataEntry { text } } }
  }
}
"""
LATEST_MATERIALIZATION = """
query Latest($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) { ... on Asset { assetMaterializations(limit: 1) { runId } } }
}
"""
RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) { ... on Runs { results { runId status } } }
}
"""


@dataclass
class DagsterUI:
    """A running webserver and the folders of its test instance."""

    url: str
    port: int
    home: Path
    root: Path
    log: Path

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def query(self, query: str, **variables: object) -> dict:
        return self.client()._execute(query, variables)

    def check_executions(self, asset: str, check: str) -> list[dict]:
        """Latest executions of an asset check, newest first."""
        return self.query(CHECK_EXECUTIONS, assetKey={"path": [asset]},
                          checkName=check)["assetCheckExecutions"]

    def latest_materialization_run(self, asset: str) -> str | None:
        found = self.query(LATEST_MATERIALIZATION, assetKey={"path": [asset]})["assetOrError"]
        events = found.get("assetMaterializations") or []
        return events[0]["runId"] if events else None

    def run_ids(self, job: str) -> set[str]:
        runs = self.query(RUNS, job=job)["runsOrError"]["results"]
        return {r["runId"] for r in runs}

    def wait_for_new_run(self, job: str, known: set[str], timeout_s: float = 60) -> str:
        """The id of a run of `job` not in `known`, once one exists (a launch from the UI)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            new = self.run_ids(job) - known
            if new:
                (run_id,) = new
                return run_id
            time.sleep(0.5)
        raise TimeoutError(f"no new {job} run after {timeout_s} s; log: {self.log}")

    def wait_for_run(self, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
        """Poll until the run ends; its final status (SUCCESS, FAILURE, CANCELED)."""
        client = self.client()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = client.get_run_status(run_id).value
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1.0)
        raise TimeoutError(f"run {run_id} not finished after {timeout_s} s; "
                           f"webserver log: {self.log}")


def write_landing(landing: Path, netflix: pd.DataFrame) -> list[str]:
    """A good batch of 600 real titles and a batch whose every `kind` is unknown; their
    names in the order to ingest them."""
    landing.mkdir(parents=True, exist_ok=True)
    netflix.sample(600, random_state=1).to_csv(landing / GOOD_BATCH, index=False)
    netflix.sample(60, random_state=2).assign(kind="podcast").to_csv(
        landing / BAD_BATCH, index=False)
    return [GOOD_BATCH, BAD_BATCH]


def _wait_until_loaded(ui: DagsterUI, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited ({process.returncode}); "
                               f"log: {ui.log.read_text()[-3000:]}")
        try:
            entries = ui.query(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        except Exception:  # not listening yet (the client cannot connect)
            time.sleep(0.5)
            continue
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [e for e in entries
                      if e["locationOrLoadError"]["__typename"] == "PythonError"]
            assert not errors, f"code location failed to load: {errors}"
            return
        time.sleep(0.5)
    raise TimeoutError(f"webserver not ready after {STARTUP_TIMEOUT_S} s; log: {ui.log}")


@contextmanager
def running_webserver(home: Path, config_dir: Path, root: Path,
                      while_loading: Callable[[], None] = lambda: None) -> Iterator[DagsterUI]:
    """`dagster-webserver` for the project's code location on a free loopback port, against
    the instance in `home`; `while_loading` runs while the server loads the code."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ui = DagsterUI(url=f"http://127.0.0.1:{port}", port=port, home=home, root=root,
                   log=ARTIFACTS / "webserver.log")
    env = {**os.environ, "DAGSTER_HOME": str(home), "APP_ENV": "local",
           "TRENDING_CONFIG_DIR": str(config_dir), "TRENDING_ROOT": str(root),
           "OMP_NUM_THREADS": "1", "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
           "WANDB_SILENT": "true"}
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with ui.log.open("w") as log:
        process = subprocess.Popen(
            [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-m", LOCATION],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while_loading()
            _wait_until_loaded(ui, process)
            yield ui
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ingest_in_process(home: Path, config_dir: Path, names: list[str],
                      then: Sequence[str] = ()) -> None:
    """Ingest landing files (raw_titles partitions already added) in this process
    (quicker than a run subprocess each), then materialize the assets `then` names (their
    checks may fail); the webserver shows these runs like any other."""
    from dagster import AssetKey

    from trending_assets.definitions import build_definitions
    from trending_assets.settings import load_settings

    defs = build_definitions(load_settings("local", config_dir))
    job = defs.resolve_job_def("ingest_landing_file")
    with DagsterInstance.from_config(str(home)) as instance:
        for name in names:
            assert job.execute_in_process(instance=instance, partition_key=name).success, name
        if then:
            defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[AssetKey(a) for a in then],
                raise_on_error=False)


@contextmanager
def prepared_ui(base: Path, tiny_bert_dir: Path, netflix: pd.DataFrame,
                landing: Callable[[Path, pd.DataFrame], list[str]] = write_landing,
                then: Sequence[str] = ()) -> Iterator[DagsterUI]:
    """Test configs (tiny BERT, small XGBoost), the landing files `landing` writes ingested
    as raw_titles partitions (by default two, the second one quarantined by its batch
    check), the assets `then` names materialized, and the webserver."""
    root = base / "root"
    names = landing(root / "landing", netflix)
    config_dir = write_test_configs(base / "configs", root, tiny_bert_dir)
    home = base / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE_YAML))
    # The community sign-up dialog of a new instance would cover the page.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    # Created before the server starts: two processes creating a new SQLite instance at
    # once can both stamp its schema version.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("landing_files", names)
    with running_webserver(home, config_dir, root, while_loading=lambda: ingest_in_process(
            home, config_dir, names, then)) as ui:
        yield ui
