# Kennel: `make demo` runs the whole loop on the demo data; `make test` runs the test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(CURDIR)/.kennel

# Everything stays on this machine and inside the project folder by default.
export DAGSTER_HOME ?= $(STATE)/dagster_home
export BENTOML_HOME ?= $(STATE)/bentoml
export BENTOML_DO_NOT_TRACK := True
export GX_ANALYTICS_ENABLED := false
export DAGSTER_TELEMETRY_ENABLED := False

# Python 3.12 is required (xgboost 3.4); override with PYTHON312=/path/to/python3.12.
PYTHON312 ?= $(shell bash scripts/find_python312.sh)

.PHONY: setup demo lint test test-fast dev clean
setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	@echo "==> Creating $(VENV) with $(PYTHON312)"
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	@echo "==> Installing the pinned stack (pyproject.toml)"
	$(VENV)/bin/uv pip install --python $(PY) -r pyproject.toml --extra dev
	@echo "==> Parsing the dbt project"
	cd dbt && ../$(VENV)/bin/dbt parse --profiles-dir . --quiet
	touch $@

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

# Lint, format and type check: seconds, so every test run starts with them.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not serving"

dev: setup
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf $(STATE) dbt/target dbt/logs
