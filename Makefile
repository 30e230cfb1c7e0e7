# `make demo` sets everything up and runs the main job; `make test` runs the whole test suite.
# Both create .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m autoscaler validate policies
	$(PY) -m autoscaler decide policies/llm-chat.yaml --seconds 900 --step 30

lint: $(STAMP)
	$(PY) -m ruff check autoscaler tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m mypy autoscaler

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
