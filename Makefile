# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/tally serve --database sqlite:///./tally.db

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Benchmarks (bench/README.md): need wrk (`apt-get install -y wrk`) and PostgreSQL for the full run.
bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-smoke: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
