# The two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/transferkit demo --out runs/demo

# The suite runs as three pytest processes: the end-to-end tests load OpenVINO and run
# real models in-process, and keeping that state out of the unit/fault tests' process
# avoided a native crash (SIGSEGV) seen once in a single-process run.
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q tests/unit tests/contract tests/cli
	$(PY) -m pytest -q tests/faults
	$(PY) -m pytest -q tests/e2e

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(TEST_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
