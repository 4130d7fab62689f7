# Two entry points that work on a fresh clone: `make quickstart` and `make test`.
# Both create .venv with $(PYTHON) and install what they need (idempotent: a stamp file records
# the install, so the second run starts at once).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.gr_jax_installed
# CPU torch lies on this machine's disk as 2.13.0; asking for it by version avoids a CUDA build.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=
# Test processes (pytest-xdist): every core by default (CI has 2). A file's tests stay in one
# process (--dist loadfile), so module fixtures are built once; `make test PYTEST_WORKERS=0` runs
# everything in this process (for a debugger).
PYTEST_WORKERS ?= auto

.PHONY: quickstart test test-fast lint format install install-test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.gr_jax_base: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(STAMP): $(VENV)/.gr_jax_base
	$(PIP) install -q $(TORCH_CPU)
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.gr_jax_base
install-test: $(STAMP)

quickstart: install
	$(PY) -m gr_jax.reproduce --config configs/quickstart.py --workdir runs/quickstart

# Lint and format check first (seconds; the rules are [tool.ruff] in pyproject.toml), then the
# tests. pytest exits 5 when it collected no test: that must fail, never pass as green.
test: install-test
	$(PY) -m ruff check gr_jax tests configs
	$(PY) -m ruff format --check gr_jax tests configs
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The inner loop: lint, then every test not marked slow (the slow ones train, spawn processes or
# compare against Hugging Face at length; `make test` runs them all).
test-fast: install-test
	$(PY) -m ruff check gr_jax tests configs
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

lint: install-test
	$(PY) -m ruff check gr_jax tests configs
	$(PY) -m ruff format --check gr_jax tests configs

# Rewrites the code in the project's format (ruff format: line length 100, indent 2).
format: install-test
	$(PY) -m ruff format gr_jax tests configs

bench: install-test
	$(PY) -m gr_jax.bench --preset small --compare_hf

clean:
	rm -rf runs .pytest_cache
