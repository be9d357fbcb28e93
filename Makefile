# The two commands of the README:
#   make demo   -- create .venv, install everything (CPU torch from local disk), run `fedstyle demo`
#   make test   -- create .venv if needed, run the default test suite
#   make check  -- the gate CI runs first: ruff format --check, ruff check, mypy
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo check test test-all clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,ray,flower]"
	$(BIN)/python -m fedstyle_secure.transport.codegen
	$(BIN)/python -m fedstyle_secure.memory $(VENV)  # freshly written libraries inflate every process's RSS
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedstyle demo

# The gate before the tests: formatter, linter (import order included) and type checker clean.
check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) build *.egg-info
