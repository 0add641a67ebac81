# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv and install what they need; torch is pinned to the CPU build that installs offline.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test test-all lint bench default-model clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/csr-adapter ingest examples/corpus --backend qdrant
	$(BIN)/csr-adapter search "Does vitamin D supplementation reduce the risk of fractures?" --backend qdrant --top-k 5

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q --runslow

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	$(BIN)/python benchmarks/encode.py
	for b in quality ingest search fallback budget serve; do \
	  test ! -f benchmarks/$$b.py || $(BIN)/python benchmarks/$$b.py || exit 1; done

default-model: install
	$(BIN)/python -m csr_adapter.training.default_model --data ../shared/data --out csr_adapter/default_model

clean:
	rm -rf $(VENV) .csr-adapter build *.egg-info
