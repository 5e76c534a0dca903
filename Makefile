# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.trending/dagster_home
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true

.PHONY: run test test-fast ui lint validate clean screenshots deploy-check image rehearse lock postgres

# Every direct and transitive dependency is pinned in the lock (`make lock` recompiles it);
# installs take only those versions, so a fresh install next month is today's.
LOCK := requirements/lock.txt
# torch first, explicitly: PyPI's torch 2.13.0 for Linux x86_64 is the CUDA build (several
# GB of nvidia-* wheels). A CPU wheel that pip can find (a find-links folder in pip's
# configuration, or TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu")
# is preferred: its version, 2.13.0+cpu, matches the lock's torch==2.13.0.
TORCH_PIP_ARGS ?=
$(VENV)/.installed-run: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $@

## make lock: recompile the lock from pyproject.toml (resolved against the CPU torch wheel;
## its local version label is dropped so the lock installs from PyPI too). A fresh file, not
## the lock itself: uv would prefer the lock's torch==2.13.0, PyPI's CUDA build.
lock:
	test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -c $(LOCK) uv; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(addprefix --find-links ,$(PIP_FIND_LINKS)) \
		--annotation-style line --custom-compile-command "make lock" --quiet -o $(LOCK).new
	sed 's/^torch==2.13.0+cpu /torch==2.13.0     /' $(LOCK).new > $(LOCK) && rm $(LOCK).new

# tests/e2e/test_postgres_instance.py starts a real PostgreSQL server (initdb + pg_ctl): Debian's
# package, installed once when missing (as chromium below).
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		     $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

# The browser test drives Debian's chromium (no downloaded browser); installed once, when
# missing. A fresh machine's package lists may be empty or stale: update, then retry.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium \
		|| { $(SUDO) apt-get update -qq && \
		     DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

$(DAGSTER_HOME)/dagster.yaml: configs/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp configs/dagster.yaml $@

## make run: install, then ingest new landing files and train + evaluate + register every model
run: $(VENV)/.installed-run $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m trending_assets.cli run

## make test: the same environment with test extras, then the whole test suite
test: $(VENV)/.installed-test $(CHROMIUM) postgres
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

## make test-fast: ruff, then the unit and component layers (tests/unit, tests/component), without
## the e2e-marked tests: no whole graph, CLI run, browser or database server
test-fast: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests/unit tests/component -m "not e2e"

## make ui: the Dagster UI and daemon (dg dev) on http://127.0.0.1:$(PORT) with the local
## default; refuses at once when the port is taken or a daemon already runs on the instance
PORT ?= 3000
ui: $(VENV)/.installed-run $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m trending_assets.ui_check --host 127.0.0.1 --port $(PORT) --dagster-home $(DAGSTER_HOME)
	$(VENV)/bin/dg dev -h 127.0.0.1 -p $(PORT)

## make screenshots: the README's UI pictures, taken by the browser test (tests/e2e/test_ui_browser.py)
screenshots: $(VENV)/.installed-test $(CHROMIUM)
	$(PY) -m pytest tests/e2e/test_ui_browser.py -q
	mkdir -p docs/screenshots
	cp $(addprefix test-artifacts/ui/,graph.png asset.png check_failure.png report_tables.png report.png) \
		docs/screenshots/

validate: $(VENV)/.installed-run
	$(VENV)/bin/dagster definitions validate -m trending_assets.definitions

## make deploy-check: the cluster deployment without a cluster (step Jobs, Helm values,
## Dockerfile, workflows, Postgres instance); README "Deploying to a cluster"
# The Helm test renders with the real engine against TRENDING_HELM_CHART: the offline chart copy
# beside this checkout when there is one (else the test skips and says how to set it).
deploy-check: SHARED_CHART := $(abspath $(CURDIR)/../shared/vendor/dagster-chart)
deploy-check: $(VENV)/.installed-test postgres
	$(if $(wildcard $(SHARED_CHART)/Chart.yaml),TRENDING_HELM_CHART="$${TRENDING_HELM_CHART:-$(SHARED_CHART)}") \
	$(PY) -m pytest tests/component/test_k8s_jobs.py tests/unit/test_helm_values.py tests/unit/test_deploy_files.py \
		tests/e2e/test_postgres_instance.py

## make rehearse: staging on this machine: PostgreSQL, S3 (moto) and a Kubernetes API stand-in
## that runs every step Job as a process; the CD smoke test runs in one of its pods
rehearse: $(VENV)/.installed-test postgres
	$(PY) -m trending_assets.rehearsal.stack

## make image: the code location image (VARIANT=cuda for the GPU build; needs Docker)
VARIANT ?= cpu
image:
	docker build --build-arg VARIANT=$(VARIANT) --build-arg GIT_SHA=$$(git rev-parse HEAD) \
		-t trending-assets:$(VARIANT) .

clean:
	rm -rf .trending
