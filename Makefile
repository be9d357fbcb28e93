# The two commands of the README:
#   make demo   -- create .venv, install everything (CPU torch from local disk), run `fedstyle demo`
#   make test   -- create .venv if needed, run the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	$(BIN)/python -m fedstyle_secure.transport.codegen
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedstyle demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) build *.egg-info
