# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.trending/dagster_home
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true

.PHONY: run test ui lint validate clean

# torch first, pinned: 2.13.0 is a CPU build here; an open range pulls a multi-GB CUDA build.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: configs/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp configs/dagster.yaml $@

## make run: install, then ingest new landing files and train + evaluate + register every model
run: $(VENV)/.installed-run $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m trending_assets.cli run

## make test: the same environment with test extras, then the whole test suite
test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

## make ui: the Dagster UI and daemon on http://127.0.0.1:3000 with the local default
ui: $(VENV)/.installed-run $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

validate: $(VENV)/.installed-run
	$(VENV)/bin/dagster definitions validate -m trending_assets.definitions

clean:
	rm -rf .trending
