"""The dagster family is pinned together; an unpinned install silently backtracks the
integrations to years-old releases without an error. requirements/lock.txt pins every
direct and transitive dependency, and this environment holds exactly those versions."""

import tomllib
from importlib.metadata import requires, version

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO

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


LOCK = REPO / "requirements" / "lock.txt"


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, sep, pinned = requirement.partition("==")
            assert sep and pinned and not any(c in pinned for c in "<>=!~*; "), line
            pins[canonicalize_name(name)] = pinned
    return pins


def required_closure(direct: list[str]) -> set[str]:
    """Every distribution the `direct` requirements need, transitively (from the installed
    metadata), on this Python and platform."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    pending: list[tuple[list[str], tuple[str, ...]]] = [(direct, ())]
    while pending:
        texts, wanted = pending.pop()
        for text in texts:
            requirement = Requirement(text)
            environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env)
                                              for env in environments):
                continue
            key = canonicalize_name(requirement.name)
            extra = tuple(sorted(requirement.extras))
            if (key, extra) not in seen:
                seen.add((key, extra))
                pending.append((requires(requirement.name) or [], extra))
    return {key for key, _ in seen}


def test_lock_pins_every_dependency_at_the_installed_version():
    pins = lock_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = required_closure(project["dependencies"]
                              + project["optional-dependencies"]["test"])
    assert {"dagster", "torch", "wandb", "great-expectations", "transformers"} <= needed
    assert needed - set(pins) == set(), "missing from requirements/lock.txt (make lock)"
    # The local label of a CPU build (2.13.0+cpu) satisfies the lock's ==2.13.0.
    installed = {n: version(n).split("+")[0] for n in needed}
    assert {n: v for n, v in installed.items() if pins[n] != v} == {}
    assert pins["torch"] == "2.13.0" and pins["dagster"] == DAGSTER
