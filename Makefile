PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow bench clean

# One command sets everything up: a virtual environment with the CPU build of torch
# (pinned in pyproject.toml) and the package in editable mode with its test extras.
install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'

test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow

bench:
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/bench_engines.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
