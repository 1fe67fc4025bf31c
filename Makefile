# Quick start: `make run` (set up + main job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/ntkdr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: setup run test bench
setup: $(BIN)/ntkdr

run: setup
	$(BIN)/ntkdr run

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/ntkdr bench
