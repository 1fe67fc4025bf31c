# Quick start: `make run` (set up + main job) and `make test` (set up + test suite).
# CI (`bash .ci/run`) runs `make test`, then `make check` (lint, types, other thread counts,
# the built wheel and sdist).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel our machines carry; the package itself asks only torch>=2.1, so a user's own
# build (e.g. CUDA) is kept.  Installed first, it satisfies that range and nothing pulls CUDA.
TORCH_PIN := torch==2.13.0

$(BIN)/ntkdr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test,fast]'
	touch $@

$(BIN)/mypy: $(BIN)/ntkdr
	$(BIN)/pip install -q -e '.[test,fast,dev]'
	touch $@

.PHONY: setup run test bench lint test-threads dist check
setup: $(BIN)/ntkdr

run: setup
	$(BIN)/ntkdr run

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/ntkdr bench

lint: $(BIN)/mypy
	$(BIN)/ruff check src tests examples benchmarks scripts
	$(BIN)/ruff format --check src tests examples benchmarks scripts
	$(BIN)/mypy

# The suite once more with one thread: BLAS / OpenMP reductions then take another order.
test-threads: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider

dist: $(BIN)/mypy
	rm -rf dist
	$(BIN)/python -m build --outdir dist . > /dev/null
	bash scripts/smoke_dist.sh $(TORCH_PIN) dist

check: lint test-threads dist
