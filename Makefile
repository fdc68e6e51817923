# modelserve: the two commands a newcomer types are `make demo` and `make test`.
# Everything else here is what those two call, plus `make generate` for generated files.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= server,operator,s3,dev

.PHONY: setup demo test lint typecheck unit e2e kind-e2e generate cluster-build cluster-up cluster-down bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash hack/install-system-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[$(EXTRAS)]'
	touch $@

## demo: train a real model, serve it with `modelserve serve`, call it over HTTP (JSON, binary) and gRPC.
demo: setup
	$(PY) hack/demo.py

## test: lint, types, layering, unit + integration + end-to-end tests (local cluster included).
test: setup lint typecheck cluster-build
	$(VENV)/bin/pytest -m "" tests

lint: setup
	$(VENV)/bin/ruff check server operator tests bench hack
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

## generate: rewrite every generated file (CRDs, install bundle, gRPC stubs); tests fail on drift.
generate: setup
	$(PY) hack/generate.py

## The local Kubernetes control plane (built from Go modules, cached in ~/.cache/modelserve).
cluster-build:
	bash hack/cluster/build.sh

cluster-up: cluster-build
	$(PY) -m hack.cluster up

cluster-down:
	$(PY) -m hack.cluster down

## e2e: only the end-to-end tests (local cluster; MODELSERVE_E2E_KUBECONFIG=... for another cluster).
e2e: setup cluster-build
	$(VENV)/bin/pytest -m e2e tests/e2e

## kind-e2e: the same tests on kind with real pods (needs a running Docker engine).
kind-e2e: setup
	bash hack/kind-e2e.sh

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info
