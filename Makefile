# The two commands: `make run` serves the gateway locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 7071
# Every virtualenv is filled from a lock file (`make lock`), each package checked against its hashes.
INSTALL := pip install --quiet --require-hashes --no-deps

.PHONY: run test bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/$(INSTALL) -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/$(INSTALL) -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# checkov pins packaging<24, which LiteLLM cannot share: it gets a virtualenv of its own.
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV): infra/requirements-checkov.txt | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/$(INSTALL) -r infra/requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

local.settings.json:
	cp local.settings.json.example $@

run: $(VENV)/.runtime local.settings.json
	$(BIN)/python -m shared.localhost --port $(PORT)

test: $(VENV)/.dev node_modules/.installed $(CHECKOV)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# LiteLLM's proxy server, the benchmark's anchor: optional, in a virtualenv of its own.
PROXY := $(VENV)/litellm-proxy/bin/litellm
$(PROXY): bench/requirements-proxy.txt | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/litellm-proxy
	$(VENV)/litellm-proxy/bin/$(INSTALL) -r bench/requirements-proxy.txt
	touch $@

bench: $(VENV)/.dev
	-$(MAKE) $(PROXY)
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

# Regenerates the lock files from the .in files: pass LOCK_ARGS= to keep today's versions where they still fit.
LOCK_ARGS ?= --upgrade
PIP_COMPILE := $(VENV)/lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
$(VENV)/lock/bin/pip-compile: | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install --quiet pip-tools==7.7.0

lock: $(VENV)/lock/bin/pip-compile
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in
	$(PIP_COMPILE) --output-file infra/requirements-checkov.txt infra/requirements-checkov.in
	$(PIP_COMPILE) --output-file bench/requirements-proxy.txt bench/requirements-proxy.in

clean:
	rm -rf $(VENV) node_modules .pytest_cache
