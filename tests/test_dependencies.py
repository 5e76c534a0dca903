"""The dagster family is pinned together; an unpinned install silently backtracks the
integrations to years-old releases without an error."""

from importlib.metadata import requires, version

import pytest

DAGSTER = "1.13.27"
CORE_PACKAGES = ("dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes",
                 "dagster-shared")
INTEGRATIONS = ("dagster-aws", "dagster-k8s", "dagster-postgres")


@pytest.mark.parametrize("name", CORE_PACKAGES)
def test_core_packages_match_the_pinned_dagster(name):
    assert version(name) == DAGSTER


@pytest.mark.parametrize("name", INTEGRATIONS)
def test_integrations_are_the_release_built_for_the_pinned_dagster(name):
    assert version(name) == "0.29.27"
    assert f"dagster=={DAGSTER}" in [r.replace(" ", "") for r in requires(name)]


def test_cpu_builds_are_installed():
    import xgboost

    assert version("torch").startswith("2.13.0")
    assert xgboost.__version__ == "3.2.0"
