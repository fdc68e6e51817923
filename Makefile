# modelserve: the two commands a newcomer types are `make demo` and `make test`.
# Everything else here is what those two call, plus `make generate` for generated files.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= server,operator,s3,dev

.PHONY: setup demo demo-cluster test lint typecheck unit e2e kind-e2e generate cluster-build images cluster-up cluster-down bench clean

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

## demo-cluster: the product's real path: chart + ModelDeployment on the local cluster's real node.
demo-cluster: setup cluster-build images
	$(PY) hack/demo_cluster.py

## test: lint, types, layering, unit + integration + end-to-end tests (local cluster and real node included).
test: setup lint typecheck cluster-build images
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

## images: the operator and server images from the Dockerfile, on a local debootstrap base (offline).
images: setup
	bash hack/images/build.sh

cluster-up: cluster-build images
	$(PY) -m hack.cluster up

cluster-down:
	$(PY) -m hack.cluster down

## e2e: only the end-to-end tests (local cluster; MODELSERVE_E2E_KUBECONFIG=... for another cluster).
e2e: setup cluster-build images
	$(VENV)/bin/pytest -m e2e tests/e2e

## kind-e2e: the same tests on kind with real pods (needs a running Docker engine).
kind-e2e: setup
	bash hack/kind-e2e.sh

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info
