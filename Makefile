# Two commands matter: `make demo` (the product on the local stack) and `make test` (everything CI runs).
# Both install what they need: a venv from PyPI, Debian packages, and kube-apiserver built once from
# Debian's source package into a cache outside the repo ($(KUBE_CACHE)).

PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
KUBE_CACHE ?= $(HOME)/.cache/apim-token-rotator
export KUBE_CACHE

.PHONY: setup venv kube lint test test-fast test-infra demo bench clean

setup: venv kube

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	# Microsoft's Python worker library (tests/worker): declares Python >= 3.13, runs on 3.11.
	$(BIN)/pip install -q --ignore-requires-python "azure-functions-runtime==1.3.0"
	@touch $@

kube:
	@bash scripts/kube-apiserver.sh >/dev/null
	@bash scripts/azurite.sh >/dev/null

lint: venv
	$(BIN)/ruff check --output-format concise .
	$(BIN)/mypy --strict
	$(BIN)/lint-imports  # the layer contracts in .importlinter

test-fast: venv
	$(BIN)/pytest -q tests/unit tests/service tests/functions

test-infra:
	bash scripts/infra-check.sh

test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider --ignore=tests/infra
	bash scripts/infra-check.sh

demo: setup
	$(BIN)/python -m devstack demo

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .venv-infra .venv-checkov .mypy_cache .ruff_cache .pytest_cache .devstack
