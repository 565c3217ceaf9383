# mtrank: the two commands of the README's Quickstart, and a few helpers.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: test quickstart lint typecheck pytest test-redis install clean

# A venv that is missing (or older than pyproject.toml) is (re)built with the dev extras.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# Only the tests that talk to Redis (marked automatically by tests/conftest.py).
test-redis: $(STAMP)
	$(BIN)/python -m pytest -q -m redis $(PYTEST_ARGS)

test: lint typecheck pytest

quickstart: $(STAMP)
	$(BIN)/mtrank quickstart

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
