# hdiff: `make demo` sets up and builds the demo dataset; `make test` sets up and runs the tests; `make test-fast` runs
# the fast loop (no server, no subprocess, no shipped model: pytest -m "not slow").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the Hub-compatible test server (olah) lives in its own venv: it pins packages the project's venv must not get
OLAH := .venv-olah/bin/olah-cli
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
# the tests import hdiff from this checkout, in pytest and in every process they start (a venv shared between
# checkouts, or installed editable from another one, would otherwise supply its own)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
PYTEST := $(BIN)/python -m pytest

.PHONY: setup demo test test-fast bench-saved clean

$(BIN)/hdiff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first and pinned: a loose requirement would pull a multi-GB CUDA build on a CPU machine
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[test]'
	touch $(BIN)/hdiff

setup: $(BIN)/hdiff

demo: setup
	$(BIN)/hdiff build configs/demo.yaml
	$(BIN)/hdiff verify out/demo

$(OLAH): | $(BIN)/hdiff
	$(BIN)/python tests/hub_server.py install

# pytest-xdist workers (one per core of a 2-core machine), each running whole test files (their module fixtures made
# once; a worker that runs Prefect tests starts its own session server); WORKERS=0 runs in one process. Not loadgroup:
# pytest 9 names a test by `_id`, so xdist 3.8's group suffix on `_nodeid` is ignored and groups split
WORKERS ?= 2
XDIST := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile)

test: setup $(OLAH)
	$(PYTEST) -q $(XDIST) --durations=15 $(PYTEST_ARGS)

test-fast: setup
	$(PYTEST) -q $(XDIST) -m "not slow" --durations=10 $(PYTEST_ARGS)

bench-saved: setup
	$(BIN)/hdiff bench saved --prompts-dir data/prompts

clean:
	rm -rf out .cache .venv-olah
