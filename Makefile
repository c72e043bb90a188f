# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test test-pgbouncer lint soak bench bench-smoke screenshots clean

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

# With TALLY_TEST_PGBOUNCER=1 (as CI sets it), `make test` also runs `make test-pgbouncer`.
test: lint
	$(BIN)/pytest
	@if [ "$$TALLY_TEST_PGBOUNCER" = 1 ]; then $(MAKE) --no-print-directory test-pgbouncer; fi

# The PostgreSQL tests that matter most behind a pooler, again, with Tally's connections through
# a PgBouncer in transaction mode that the run starts (README, Testing): the API, the storage
# contract, idempotency, the events feed and webhooks, migrations, the command line (but the
# table of `verify`'s corruptions), the client against a live server, and the races between two
# servers. About three minutes; needs `pgbouncer` (`apt-get install pgbouncer`) and
# TALLY_TEST_POSTGRES_URL.
PGBOUNCER_TESTS := tests/test_points_api.py tests/test_storage_contract.py \
	tests/test_idempotency.py tests/test_events.py tests/test_event_feed_concurrency.py \
	tests/test_webhooks.py tests/test_migrations.py tests/test_cli.py tests/test_client.py \
	tests/test_concurrency.py
PGBOUNCER_LEAVES_OUT := one-process or two-workers or corrupted or traces_every

test-pgbouncer: $(VENV)/.dev-installed
	@test -n "$$TALLY_TEST_POSTGRES_URL" || { echo "make test-pgbouncer: set TALLY_TEST_POSTGRES_URL (see README, Testing)"; exit 2; }
	$(BIN)/pytest --pgbouncer -k "not ($(PGBOUNCER_LEAVES_OUT))" $(PGBOUNCER_TESTS)

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
