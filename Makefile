# lhcad — every target creates/reuses .venv and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PYTEST_ARGS ?=

.PHONY: demo test bench install clean help chromium

help:
	@echo "make demo   - create .venv, install lhcad, run the whole pipeline on the embedded demo config"
	@echo "make test   - create .venv, install lhcad with all extras, run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/ (JSON into .bench/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned: this is the CPU build on this machine's disk (a looser pin pulls CUDA wheels).
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	touch $@

$(VENV)/.installed-core: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-all: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e ".[all]"
	touch $@ $(VENV)/.installed-core

# The report test drives a real headless Chromium (Debian package; CI runs as root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' (needed by tests/test_report.py)"; exit 1; fi; }

install: $(VENV)/.installed-core

demo: $(VENV)/.installed-core
	$(BIN)/lhcad run configs/demo.yaml

test: $(VENV)/.installed-all chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-all
	mkdir -p .bench
	@for b in benchmarks/*.py; do \
	  n=$$(basename $$b .py); echo "== $$n"; \
	  $(BIN)/python $$b --json .bench/$$n.json || exit 1; \
	done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
