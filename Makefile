# The two commands a newcomer needs: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bms-gateway needs Python >= 3.11, found " + sys.version.split()[0] + ": run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,mqtt,metrics]'
	@touch $(STAMP)

## make demo [ARGS="--scenario cell-ovp --duration 30"]: the whole chain on simulated hardware, live
demo: $(STAMP)
	$(BIN)/bms-gateway demo $(ARGS)

## make test: the test suite (no hardware needed)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## make lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
