# pc3d: `make test` and `make demo` set everything up on first use (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pc3d-setup
BENCH_OUT ?= bench_results

.PHONY: setup test test-fast demo bench lint clean

setup: $(STAMP)

# Re-run set-up only when the dependency list changes (or the venv is missing).
$(STAMP): setup.py tools/setup.sh
	bash tools/setup.sh
	touch $@

# Two pytest workers, one thread each (tests/conftest.py), whole files per worker (module fixtures built once).
# The 15 slowest tests are listed at the end: the test command must stay under 15 minutes on every machine kind.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile --durations=15

test: $(STAMP)
	$(PYTEST) tests

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

demo: $(STAMP)
	$(PY) tools/demo.py

bench: $(STAMP)
	$(PY) tools/bench.py all --out $(BENCH_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache $(BENCH_OUT)
