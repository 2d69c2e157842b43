# Quick start: `make demo` (set up + default experiment) and `make test` (set up + tests).
# TORCH pins the wheel: 2.13.0 is the CPU build on this project's machines; on a
# GPU machine the same pin from PyPI is the CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint test-all bench clean

$(BIN)/cascadesim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,rl,rllib,lint,tune,ray]"
	touch $@

setup: $(BIN)/cascadesim

# the default preset, 3 seeds (bands in the report) as 2 processes x 1 torch thread (no oversubscribed cores);
# each demo run gets its own directory: nothing is ever overwritten
demo: setup
	$(BIN)/cascadesim run --seeds 3 --workers 2 --out runs/default-$$(date +%Y%m%d-%H%M%S)

# one xdist worker per core, a test module per worker (module fixtures are built once); conftest.py pins each
# worker's torch threads to its share of the cores
test: setup
	$(BIN)/python -m pytest -q -m "not benchmark" -n auto --dist loadscope

# the packages are lint-, format- and type-clean; CI runs this before the tests
PACKAGES := simulator agents scenarios dashboards
lint: setup
	$(BIN)/ruff check $(PACKAGES)
	$(BIN)/ruff format --check $(PACKAGES)
	$(BIN)/mypy

bench: setup
	$(BIN)/cascadesim bench

clean:
	rm -rf $(VENV) runs
