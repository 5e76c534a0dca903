"""The staging/production Dagster instance on a real PostgreSQL server.

A PostgreSQL server runs on loopback from a temporary folder (initdb + pg_ctl; as an
unprivileged user when the tests run as root, which PostgreSQL refuses). A Dagster instance
with configs/dagster-production.yaml (dagster-postgres run, event log and schedule storage,
connection details from environment variables) materializes a small graph with an asset
check, and the sensor daemon ticks a sensor that keeps a cursor. Then the server is stopped
and started again and a new instance object must still see the run, the check result, the
sensor's cursor and ticks, and the sensor must resume from its cursor.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    EventRecordsFilter,
    SensorEvaluationContext,
    SkipReason,
    asset,
    asset_check,
    materialize,
    sensor,
)
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.sensor import execute_sensor_iteration
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from resources.notify import DeliveryLedger
from tests.helpers import REPO
from trending_assets.rehearsal.services import PostgresServer, ServiceError

pytestmark = pytest.mark.postgres

INSTANCE_CONFIG = REPO / "configs" / "dagster-production.yaml"


# --- a small graph: two assets, a check, and a sensor that keeps a cursor ----------------

@asset
def numbers() -> list[int]:
    return [3, 1, 2]


@asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


@asset_check(asset=numbers)
def numbers_are_positive(numbers: list[int]) -> AssetCheckResult:
    return AssetCheckResult(passed=all(n > 0 for n in numbers), metadata={"rows": len(numbers)})


@sensor(minimum_interval_seconds=1, default_status=DefaultSensorStatus.RUNNING)
def check_result_watcher(context: SensorEvaluationContext) -> SkipReason:
    """Reads check results stored after its cursor, as an alerting sensor does."""
    records = context.instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION,
                           after_cursor=int(context.cursor or 0)), ascending=True)
    if records:
        context.update_cursor(str(records[-1].storage_id))
    return SkipReason(f"{len(records)} new check results")


small_defs = Definitions(assets=[numbers, total], asset_checks=[numbers_are_positive],
                         sensors=[check_result_watcher])


# --- the server -------------------------------------------------------------------------

@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.create()
    try:
        server.init()
        server.start()
        server.create_database()
        yield server
    except ServiceError as exc:  # not installed, or initdb/pg_ctl failed: say what
        pytest.fail(str(exc))
    finally:
        server.destroy()


@pytest.fixture
def production_instance_home(postgres: PostgresServer, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME with the production instance config; connection from env variables."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_CONFIG, home / "dagster.yaml")
    for name, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port),
                        "DAGSTER_PG_USERNAME": postgres.username,
                        "DAGSTER_PG_PASSWORD": postgres.password,
                        "DAGSTER_PG_DB": postgres.database}.items():
        monkeypatch.setenv(name, value)
    return home


def open_instance(home: Path) -> DagsterInstance:
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def tick_sensors(instance: DagsterInstance) -> None:
    """One iteration of the sensor daemon over the small code location."""
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(python_file=__file__,
                                                    attribute="small_defs"),
        location_name="small")
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin),
                                              instance) as workspace:
        list(execute_sensor_iteration(workspace, logging.getLogger("SensorDaemon"),
                                      threadpool_executor=None,
                                      submit_threadpool_executor=None))
        remote = (workspace.create_request_context().get_code_location("small")
                  .get_repository("__repository__").get_sensor(check_result_watcher.name))
    global SENSOR_IDS
    SENSOR_IDS = (remote.get_remote_origin_id(), remote.selector_id)


SENSOR_IDS: tuple[str, str] = ("", "")
CHECK = AssetCheckKey(numbers.key, numbers_are_positive.check_key.name)


def sensor_state(instance: DagsterInstance) -> tuple[str | None, list]:
    state = instance.get_instigator_state(*SENSOR_IDS)
    ticks = instance.get_ticks(*SENSOR_IDS)
    return (state.instigator_data.cursor if state else None), ticks


def test_runs_checks_and_sensor_cursors_survive_a_restart(postgres, production_instance_home):
    first = open_instance(production_instance_home)
    assert isinstance(first.run_storage, PostgresRunStorage)
    assert isinstance(first.event_log_storage, PostgresEventLogStorage)
    assert isinstance(first.schedule_storage, PostgresScheduleStorage)

    result = materialize([numbers, total, numbers_are_positive], instance=first)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    tick_sensors(first)
    cursor, ticks = sensor_state(first)
    assert cursor is not None and int(cursor) > 0
    assert [t.status for t in ticks] == [TickStatus.SKIPPED]
    assert ticks[0].skip_reason == "1 new check results"
    # Which alert channels already have an alert: kept in the instance's key-value table.
    DeliveryLedger(first).record("run:abc", {"slack:0123", "log"})
    first.dispose()

    postgres.stop()
    postgres.start()
    second = open_instance(production_instance_home)

    run = second.get_run_by_id(result.run_id)
    assert run is not None and run.status == DagsterRunStatus.SUCCESS
    assert second.get_latest_materialization_event(total.key).asset_materialization is not None
    [check_record] = second.event_log_storage.get_asset_check_execution_history(CHECK, limit=5)
    assert check_record.run_id == result.run_id
    assert check_record.event.dagster_event.event_specific_data.passed
    assert sensor_state(second)[0] == cursor
    assert DeliveryLedger(second).delivered("run:abc") == {"slack:0123", "log"}
    assert DeliveryLedger(second).delivered("run:other") == set()

    # The sensor resumes from its stored cursor: it sees only the new check result.
    assert materialize([numbers, numbers_are_positive], instance=second).success
    tick_sensors(second)
    new_cursor, ticks = sensor_state(second)
    assert int(new_cursor) > int(cursor)
    assert [t.skip_reason for t in ticks] == ["1 new check results", "1 new check results"]
    second.dispose()
