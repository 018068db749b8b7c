# The two commands a newcomer needs: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench fuzz soak lock clean screenshots browser

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

## make browser: what the local page's browser test and screenshots need: the browser extra (playwright) in .venv;
## chromium itself comes from apt (apt-get install chromium), never a download of playwright's own
browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[browser]'

## make screenshots: the local page at phone and desktop width, from a gateway on the simulator, to docs/*.png
screenshots: browser
	$(BIN)/python tests/page_screenshots.py docs

## make lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench fuzz
	$(BIN)/ruff format --check gateway tests bench fuzz
	$(BIN)/mypy

# Benchmark-only dependencies in their own venv: mppsolar pins paho-mqtt < 2, which .venv must not get.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
MPPSOLAR := mppsolar==0.16.56

$(BENCH_STAMP):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet '$(MPPSOLAR)'
	@touch $(BENCH_STAMP)

## make bench: performance figures beside their targets (table, and bench-results.json); about 4 minutes
bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench --mppsolar-python $(BENCH_VENV)/bin/python

## make fuzz: every parser's hypothesis fuzz at 10,000 examples each (BMS_FUZZ_EXAMPLES to change)
fuzz: $(STAMP)
	BMS_FUZZ_EXAMPLES=$${BMS_FUZZ_EXAMPLES:-10000} $(BIN)/python -m pytest -q tests/test_jk_nw_fuzz.py \
		tests/test_jk_modbus_fuzz.py tests/test_rs485_pylontech.py tests/test_rs485_modbus_fuzz.py -k fuzz

## make soak: a simulated month through the real control loop, faults every few hours (SOAK_DAYS to change)
soak: $(STAMP)
	$(BIN)/python -m bench.soak --days $${SOAK_DAYS:-30}

# The lock tool in its own venv: .venv stays what the gateway and its tests need.
LOCK_VENV := .venv-lock
LOCK_STAMP := $(LOCK_VENV)/.installed
UV := uv==0.13.9

$(LOCK_STAMP):
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet '$(UV)'
	@touch $(LOCK_STAMP)

## make lock [LOCK_ARGS=--upgrade]: deploy/requirements.lock, what deploy/install.sh installs with --require-hashes:
## the runtime dependencies with the mqtt and metrics extras, and the build backend, each pinned with its hashes.
## Versions already in the lock are kept unless pyproject.toml needs others; LOCK_ARGS=--upgrade takes the newest.
lock: $(LOCK_STAMP)
	$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(LOCK_VENV)/bin/uv pip compile --quiet pyproject.toml - --extra mqtt --extra metrics --universal \
		--python-version 3.11 --generate-hashes --custom-compile-command 'make lock' $(LOCK_ARGS) -o deploy/requirements.lock

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(LOCK_VENV) bench-results.json build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
