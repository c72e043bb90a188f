# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint soak bench bench-smoke screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e .
	touch $@

# The dev install has the Python client too (clients/python), which the tests drive.
$(VENV)/.dev-installed: $(VENV)/.installed clients/python/pyproject.toml
	$(PIP) install -c constraints.txt -e '.[dev]' -e clients/python
	touch $@

# `make run` serves TALLY_DATABASE_URL on TALLY_PORT when they are set (in the environment or
# as `make run TALLY_PORT=9000`).
TALLY_DATABASE_URL ?= sqlite:///./tally.db
TALLY_PORT ?= 8000

run: $(VENV)/.installed
	$(BIN)/tally serve --database "$(TALLY_DATABASE_URL)" --port "$(TALLY_PORT)"

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench clients/python
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# The durability tests at more points (kill -9 at six points per backend, then the SIGTERM,
# database-fault and backup tests), then the long variants marked `soak` (schemathesis and the
# live state machine at length, the stall test at 10,000 members, stalled requests): about ten
# minutes. PostgreSQL is required, as for CI.
soak: $(VENV)/.dev-installed
	@test -n "$$TALLY_TEST_POSTGRES_URL" || { echo "make soak: set TALLY_TEST_POSTGRES_URL (see README, Testing)"; exit 2; }
	TALLY_SOAK=1 $(BIN)/pytest -p no:cacheprovider -rP tests/test_crash.py tests/test_shutdown.py tests/test_database_faults.py tests/test_backup.py
	TALLY_SOAK=1 $(BIN)/pytest -p no:cacheprovider -m soak tests

# Benchmarks (bench/README.md): need wrk (`apt-get install -y wrk`) and PostgreSQL for the full run.
bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-smoke: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py --smoke $(BENCH_ARGS)

# The console's screenshots in the README (docs/screenshots/*.png), taken by its browser tests in
# Debian's chromium (`apt-get install chromium`).
screenshots: $(VENV)/.dev-installed
	TALLY_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q -p no:cacheprovider tests/test_console.py

clean:
	rm -rf $(VENV) build *.egg-info
