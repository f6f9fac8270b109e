# The two commands for a fresh machine with only Python 3.11+:
#   make demo   set up a local venv and import the sample data into the embedded PostgreSQL
#   make test   set up a local venv, lint and type-check, and run the whole test suite
#   make test-unit  the pure tests only: nothing started, well under a minute
#   make test-fast  the edit loop: unit and integration tests, without the `slow` ones that start servers or clusters
#   make bench  the benchmark against PostgreSQL's COPY (about 25 minutes with the 10M-row memory run; BENCH_ARGS="--rows 100000 --memory-rows 10000,100000" for a quick one)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

# The benchmark's own venv holds bulkflow as a user installs it, without the test tools:
# pandera loads hypothesis whenever it is installed, 0.1 s of every import a user never pays.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: demo test test-unit test-fast check bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bulkflow demo

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers (xdist), each with its own embedded PostgreSQL and Prefect test server; a
# test file stays on one worker, so its tests keep their order.
test: check
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/bulkflow bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .bulkflow .bulkflow-bench .pytest_cache
