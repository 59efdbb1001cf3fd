# hdiff: `make demo` sets up and builds the demo dataset; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the Hub-compatible test server (olah) lives in its own venv: it pins packages the project's venv must not get
OLAH := .venv-olah/bin/olah-cli
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup demo test bench-saved clean

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

test: setup $(OLAH)
	$(BIN)/pytest -q

bench-saved: setup
	$(BIN)/hdiff bench saved --prompts-dir data/prompts

clean:
	rm -rf out .cache .venv-olah
