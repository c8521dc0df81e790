# Two commands: `make demo` (set up, run a real job on the embedded model) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

# llama-cpp-python compiles from source on first install (about 7 minutes on 2 cores);
# pip caches the built wheel, so later set-ups take seconds.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[embedded,dev]"
	touch $@

demo: setup
	bash scripts/demo.sh

# The whole suite: unit tests, PostgreSQL and Redis integration, the real embedded model, slow tests.
test: setup
	$(BIN)/python -m pytest -q -ra

# Everyday loop: skip the real model and slow tests.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not model and not slow"

bench: setup
	$(BIN)/python bench/llm_pool.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/dataset_build.py
	$(BIN)/python bench/summarize.py

clean:
	rm -rf $(VENV) var .pytest_cache
