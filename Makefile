# Two commands: `make run` (set up, run the whole pipeline, print results)
# and `make test` (set up, run the tests). Needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UI_PORT ?= 5000
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Stage commands call `python`/`dvc` from the project's environment, and
# every run (queued DVC experiments too) logs to this project's store.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: setup run test test-fast test-kernels lint mutate mutate-sample mutate-ci ui bench exp clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: setup
	@$(BIN)/python -m pipeline.tools.check_params
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.tools.show

# The whole suite on every core; it runs the CNN tests once more under each of TensorFlow's
# CPU kernel sets, oneDNN's and the default Eigen ones, whichever this CPU turns on by default
# (tests/test_kernels.py). A test file's tests share one worker (and its module fixtures);
# tests/conftest.py orders the files so the shared pipeline runs (tests/scenarios.py) start first.
XDIST := -n $(JOBS) --dist loadfile --no-loadscope-reorder
test: setup
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: setup
	$(BIN)/python -m pytest -q $(XDIST) -m 'not slow'

test-kernels: setup
	$(BIN)/python -m pytest -q tests/test_kernels.py

lint: setup
	$(BIN)/ruff check .

# Mutation testing (docs/mutation-testing.md): mutmut on the functions that compute reported
# numbers (mutation/targets.toml), each mutant against the fast tests that run its function;
# prints the score and every survivor, fails below 90%. About 2 hours on 2 cores.
# `make mutate-sample` scores the measures modules only; MUTATE_ARGS=--keep reuses mutants/.
# `make mutate-ci` (CI runs it): a fixed sixteenth of the measures modules' mutants, in a scratch copy.
mutate: setup
	$(BIN)/python mutation/run.py --jobs $(JOBS) $(MUTATE_ARGS)

mutate-sample: setup
	$(BIN)/python mutation/run.py --sample --jobs $(JOBS) $(MUTATE_ARGS)

mutate-ci: setup
	$(BIN)/python mutation/run.py --ci --jobs $(JOBS)

ui: setup
	@$(BIN)/python -m pipeline.tools.ui_link $(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host 127.0.0.1 --port $(UI_PORT)

# A named preset of presets/ as one DVC experiment: make exp PRESET=tiny
exp: setup
	@test -n "$(PRESET)" || { $(BIN)/python -m pipeline.tools.presets; echo "usage: make exp PRESET=<name>" >&2; exit 2; }
	$(BIN)/python -m pipeline.tools.presets run $(PRESET)

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf data/prepared data/target data/shadows data/reference data/defenses data/runs data/*.npz data/summary_run.json
