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

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) tools/demo.py

bench: $(STAMP)
	$(PY) tools/bench.py all --out $(BENCH_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache $(BENCH_OUT)
