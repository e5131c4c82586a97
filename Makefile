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

# Each test file runs in its own pytest process. A single-process run of the whole suite
# crashed with SIGSEGV (native code, no Python traceback) at varying tests late in the run;
# not yet root-caused (suspects: OpenVINO and PyTorch kernels in one long-lived process).
# Isolation keeps CI meaningful: every file still runs, and a crash names its file.
TEST_FILES = $(sort $(wildcard tests/unit/test_*.py tests/contract/test_*.py tests/cli/test_*.py tests/faults/test_*.py tests/e2e/test_*.py))

test: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	@set -e; for f in $(TEST_FILES); do echo "== $$f"; $(PY) -m pytest -q -p no:cacheprovider $$f; done
	@echo "All test files passed."

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(TEST_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
