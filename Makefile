# The README's two commands: `make demo` (the main job) and `make test` (the tests).
# Each creates .venv and installs the pinned requirements.txt when missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.exfm-installed
# Airflow's CLIs spawn sub-commands by name: the venv's bin/ must be on PATH.
export PATH := $(BIN):$(PATH)
PYTEST_ARGS ?=
# e.g. make demo DEMO_ARGS="--days 3" or DEMO_ARGS="--set models.fm_hidden=[256,128]"
DEMO_ARGS ?=

.PHONY: venv demo test test-unit test-integration bench stack-up stack-down stack-status clean dvc-remote

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing requirements.txt into $(VENV) (first time: about 3 minutes)"
	# torch first, from its pin (the CPU build on local disk), so nothing pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/exfm demo $(DEMO_ARGS)

# pytest's exit code 5 ("no tests collected") is a failure here, never a silent pass.
test: $(STAMP)
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS) tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

test-unit: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/integration tests/dags

bench: $(STAMP)
	$(BIN)/python bench/das.py --rows 200000
	$(BIN)/python bench/train.py

stack-up: $(STAMP)
	$(BIN)/exfm stack up
stack-down: $(STAMP)
	$(BIN)/exfm stack down
stack-status: $(STAMP)
	$(BIN)/exfm stack status

clean:
	rm -rf $(VENV) .pytest_cache

# The S3 remote of `dvc push/pull` on the configured endpoint (the embedded SeaweedFS by default;
# `make stack-up` first): bucket created, url + endpointurl in .dvc/config, keys in the git-ignored
# .dvc/config.local, analytics off. docs/dvc.md.
dvc-remote: $(STAMP)
	$(BIN)/exfm offline remote
