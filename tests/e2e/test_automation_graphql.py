"""A retrain request through the GraphQL API of a running webserver, as the README shows it:
the run gets the overrides as run config and records the reason in its tags."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance

from tests.helpers.dagster_ui import DagsterUI
from trending_assets.automation.requests import (
    REASON_TAG,
    REQUESTED_BY_TAG,
    settings_run_config,
    training_selection,
)


def test_retrain_with_overrides_and_reason_through_graphql(dagster_ui: DagsterUI):
    selection = training_selection(["xgboost"], rebuild_data=True)
    run_id = dagster_ui.client().submit_job_execution(
        "train_models",
        run_config=settings_run_config({"xgboost": {"max_depth": 2, "n_estimators": 10}}),
        tags={REASON_TAG: "production macro-F1 fell to 0.31", REQUESTED_BY_TAG: "monitor"},
        asset_selection=[k.to_user_string() for k in selection],
    )
    assert dagster_ui.wait_for_run(run_id) == "SUCCESS", dagster_ui.log
    with DagsterInstance.from_config(str(dagster_ui.home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.tags[REASON_TAG] == "production macro-F1 fell to 0.31"
        assert run.tags[REQUESTED_BY_TAG] == "monitor"
        assert set(run.asset_selection) == set(selection)
        event = instance.get_latest_materialization_event(AssetKey("xgboost_model"))
        assert event.run_id == run_id
        params = event.asset_materialization.metadata["params"].value
        assert (params["max_depth"], params["n_estimators"]) == (2, 10)
