# Every target sets itself up: a fresh clone needs only `make run` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
export PYENV_VERSION := 3.13.0
export SAM_CLI_TELEMETRY := 0
# The demo provider (oidc-provider) supports Node.js LTS releases from 22 on; Debian bookworm has 18 and
# many machines 20, so setup installs this one from the npm registry's `node` package into .tools/node.
NODE_VERSION := 22.23.3
NODE_DIR    := .tools/node
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/$(NODE_DIR)/node_modules/.bin:$(PATH)
# Two workers: the suite is built for it (each worker starts its own local stacks on free ports).
PYTEST_ARGS ?= -n 2

# The dev-token user defaults to a fixed name unless USER is given on the command line.
ifneq ($(origin USER),command line)
DEV_USER := dev-user
else
DEV_USER := $(USER)
endif
TENANT ?= acme
# SCOPES given (even empty): the token carries exactly these; not given: every scope a route requires.
DEV_TOKEN_SCOPES := $(if $(filter undefined,$(origin SCOPES)),,--scopes "$(SCOPES)")

.PHONY: help setup lint types cfn build unit integration e2e test run dev-token bench client openapi sdk-models lock clean

help:
	@echo "make run        start the local stack (console on :8000, API on :3000, Lambda on :3001, demo provider on :3002)"
	@echo "make run LOGS=all   the same, streaming every function's log lines"
	@echo "make test       lint, types, template checks, sam build, unit, integration and browser tests"
	@echo "make dev-token TENANT=acme [USER=alice] [SCOPES=connections:read]   print a bearer token for the local API"
	@echo "make bench      benchmarks (see BENCHMARKS.md); make bench QUICK=1: every section, smaller, in under two minutes"
	@echo "make client     regenerate the consumer client's copy of the SSRF guard (clients/python)"
	@echo "make openapi    regenerate the OpenAPI document the document function serves, after changing a route"
	@echo "make sdk-models regenerate the AWS SDK models the layer ships, after changing botocore or a service called"

setup: $(VENV)/.installed $(NODE_DIR)/.installed provider/node_modules/.installed console/node_modules/.installed clients/node/node_modules/.installed .system-deps.installed

$(NODE_DIR)/.installed:
	npm install --prefix $(NODE_DIR) --no-save --no-audit --no-fund --loglevel=error node@$(NODE_VERSION)
	@$(NODE_DIR)/node_modules/.bin/node --version
	touch $@

$(VENV)/.installed: requirements/dev.txt layers/deps/requirements.txt
	@command -v python3.13 >/dev/null || { echo "python3.13 is required (pyenv install 3.13.0)"; exit 1; }
	python3.13 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	touch $@

provider/node_modules/.installed: provider/package.json provider/package-lock.json | $(NODE_DIR)/.installed
	cd provider && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The console needs no packages to run; axe-core (its accessibility test) comes from its lockfile.
console/node_modules/.installed: console/package.json console/package-lock.json | $(NODE_DIR)/.installed
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The Node.js consumer example (clients/node) calls CallApiFunction with the AWS SDK from its lockfile.
clients/node/node_modules/.installed: clients/node/package.json clients/node/package-lock.json | $(NODE_DIR)/.installed
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
.system-deps.installed:
	@if ! command -v chromium >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=layers/shared $(BIN)/lint-imports --no-cache

types: setup
	$(BIN)/mypy

cfn: setup
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --region eu-central-1
	$(BIN)/sam build --parallel --cached

unit: setup
	$(PY) -m pytest tests/unit clients/python/tests $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

test: lint types cfn
	$(PY) -m pytest tests clients/python/tests $(PYTEST_ARGS)

# LOGS=all streams every function's log lines too, not only one line per request and run.
run: setup
	$(PY) -m devstack run $(if $(filter all,$(LOGS)),--all-logs)

dev-token: setup
	@$(PY) -m devstack token --tenant "$(TENANT)" --user "$(DEV_USER)" $(DEV_TOKEN_SCOPES)

# The cold-init benchmarks run on the layers as `sam build` makes them (layers/*/Makefile), the
# dependencies installed for this machine's architecture (the template's are arm64): see BENCHMARKS.md.
BENCH_LAYERS := .bench/layers

$(BENCH_LAYERS)/deps/.installed: layers/deps/requirements.txt layers/deps/Makefile layers/layer.mk
	@$(MAKE) --no-print-directory -s -C layers/deps build-DependenciesLayer ARTIFACTS_DIR=$(CURDIR)/$(BENCH_LAYERS)/deps PLATFORM=
	touch $@

bench: setup $(BENCH_LAYERS)/deps/.installed
	$(MAKE) -C layers/shared build-SharedLayer ARTIFACTS_DIR=$(CURDIR)/$(BENCH_LAYERS)/shared
	$(MAKE) -C clients/python/src build-ClientLayer ARTIFACTS_DIR=$(CURDIR)/$(BENCH_LAYERS)/client
	@PYTHONPATH=.:layers/shared:clients/python/src:clients/python/tests $(PY) -m benchmarks $(if $(QUICK),--quick)

client: setup
	$(PY) clients/python/sync_netguard.py

openapi: setup
	PYTHONPATH=layers/shared $(PY) -m oauth_connections.entrypoints.http.openapi_build

sdk-models: setup
	PYTHONPATH=layers/shared $(PY) -m oauth_connections.core.sdk_models_build

lock:
	uv pip compile --python-version 3.13 --generate-hashes -q requirements/runtime.in -o layers/deps/requirements.txt
	cd requirements && uv pip compile --python-version 3.13 --generate-hashes -q dev.in -o dev.txt

clean:
	rm -rf $(VENV) .tools .aws-sam .devstack .pytest_cache .mypy_cache .ruff_cache provider/node_modules console/node_modules clients/node/node_modules .system-deps.installed
