# The two commands: `make run` serves the gateway locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 7071

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# checkov pins packaging<24, which LiteLLM cannot share: it gets a virtualenv of its own.
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV): infra/requirements-checkov.txt | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet -r infra/requirements-checkov.txt
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
	$(VENV)/litellm-proxy/bin/pip install --quiet -r bench/requirements-proxy.txt
	touch $@

bench: $(VENV)/.dev
	-$(MAKE) $(PROXY)
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache
