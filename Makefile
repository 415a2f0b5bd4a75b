# The two commands: `make run` and `make test`. Both set up what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint typecheck unit clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/clustermail up

test: $(STAMP)
	./scripts/install-system-deps.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(STAMP)
	./scripts/install-system-deps.sh
	$(BIN)/python -m bench.coord
	$(BIN)/python -m bench.failover
	$(BIN)/python -m bench.store

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
