# The two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench clean web

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e .
	touch $(STAMP)

# The browser tests (tests/browser) drive the system Chromium: install it when missing and we are root;
# without apt (or root) they skip, saying so, and the rest of the suite still runs.
$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no chromium (apt-get install chromium): the browser tests will skip"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/transferkit demo --out runs/demo

# The whole suite in one pytest process, as a long-lived user process (a notebook, a server)
# would use the library. (Until 2026-12-01 each file ran in its own process, to contain a
# SIGSEGV late in single-process runs; its cause, OpenVINO Cores freed in creation order
# leaving an unmapped signal stack, is fixed in transferkit.accel.openvino_core and tested.)
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# Rebuild the page's assets (src/transferkit/server/static/, committed) from web/; needs Node.js 20 and npm.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

bench: $(TEST_STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
