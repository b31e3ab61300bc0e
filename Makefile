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

.PHONY: setup demo lint test test-full test-fast test-stress dev clean bench bench-quick
setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	@echo "==> Creating $(VENV) with $(PYTHON312)"
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	@echo "==> Installing the pinned stack (pyproject.toml)"
	$(VENV)/bin/uv pip install --python $(PY) -r pyproject.toml --extra dev
	@echo "==> Installing Kennel itself (editable: the \`kennel\` command runs this checkout)"
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -e .
	@echo "==> Parsing the dbt project"
	cd dbt && ../$(VENV)/bin/dbt parse --profiles-dir . --quiet
	touch $@

# The instance's settings (run monitoring, no telemetry) are kennel/dagster_instance.yaml, which the
# `kennel` command also writes into a DAGSTER_HOME that has none.
$(DAGSTER_HOME)/dagster.yaml: kennel/dagster_instance.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

# First fails the runs an earlier, killed demo left in progress and removes their staging (no daemon here).
demo: setup
	$(PY) -c 'from sensors.housekeeping import main; main()'
	$(PY) scripts/demo.py $(DEMO_ARGS)

# Lint, format and type check: seconds, so every test run starts with them.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

# Everything `make test` runs, plus the long loops: every crash point (rewrites RELIABILITY.md) and the
# tests marked `full` (a Spark worker killed mid-job).
test-full: lint
	KENNEL_FAULTS=all $(PY) -m pytest -m ""

test-fast: setup
	$(PY) -m pytest -m "not slow and not serving"

# The tests that wait on a broker, a server, a subprocess or a timeout, STRESS_COUNT times in a row while
# two busy loops take CPU from them: a timing assumption that holds only on an idle machine fails here.
# Stops at the first failure; the busy loops are stopped however the target ends.
STRESS_COUNT ?= 10
STRESS_TESTS ?= tests/test_kafka.py tests/test_s3.py tests/test_sensors.py tests/test_housekeeping.py \
	tests/test_serving.py tests/test_serving_shutdown.py tests/test_dagster_dev.py tests/test_closed_loop.py
test-stress: setup
	@busy=(); trap 'kill "$${busy[@]}" 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	for _ in 1 2; do yes > /dev/null & busy+=($$!); done; \
	for round in $$(seq 1 $(STRESS_COUNT)); do \
	  echo "==> stress round $$round of $(STRESS_COUNT), two busy loops running"; \
	  $(PY) -m pytest -x -q $(STRESS_TESTS) || exit 1; \
	done

# Every benchmark (bench/run.py), then the goals summary at the top of BENCHMARKS.md and the plots in
# bench/plots/: hours at full size. `bench-quick` runs every script's small sizes in minutes, asserting
# nothing about speed (CI runs it so that the scripts do not rot). BENCH_ARGS="--only training" narrows it.
bench: setup
	$(VENV)/bin/uv pip install --python $(PY) -r pyproject.toml --extra bench
	$(PY) bench/run.py $(BENCH_ARGS)

bench-quick: setup
	$(VENV)/bin/uv pip install --python $(PY) -r pyproject.toml --extra bench
	$(PY) bench/run.py --quick $(BENCH_ARGS)

dev: setup
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf $(STATE) dbt/target dbt/logs
