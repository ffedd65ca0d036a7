# splatcast: the two commands of the README's quick start.
#   make serve   install the runtime into .venv and run the server with the default avatar
#   make test    install runtime + test needs into .venv (and system packages when root) and run the tests
# Both create their own virtual environment and work from a fresh clone.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
HOST   ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: serve test install install-dev system-deps lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime only (no torch, no test tools).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# Runtime + tests + training/export tools (torch==2.13.0 is the CPU build on disk).
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,train,bench]'
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

serve: $(VENV)/.runtime
	$(BIN)/splatcast serve --host $(HOST) --port $(PORT)

system-deps:
	@bash scripts/install-system-deps.sh

test: $(VENV)/.dev system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
