# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv and installs ue-flow into it when needed.

VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ue-flow demo

lint: $(STAMP)
	$(VENV)/bin/ruff check ue_flow tests bench
	$(VENV)/bin/mypy ue_flow
	$(VENV)/bin/ue-flow docs --check

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(VENV)/bin/python bench/run.py

# Small counts, under a minute, so that CI keeps the benchmarks running.
bench-quick: $(STAMP)
	$(VENV)/bin/python bench/run.py --quick
