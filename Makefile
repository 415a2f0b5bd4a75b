# The two commands: `make run` and `make test`. Both set up what they need.
# `make unit` is the fast inner loop while developing (CI runs `make test`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench campaign lint typecheck unit clean

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
	$(BIN)/pytest -q -n 2

# The fast inner loop: everything but the tests that start a whole cluster of processes.
unit: $(STAMP)
	./scripts/install-system-deps.sh
	$(BIN)/pytest -q -n 2 -m "not e2e"

bench: $(STAMP)
	./scripts/install-system-deps.sh --bench
	$(BIN)/python -m bench.coord
	$(BIN)/python -m bench.failover
	$(BIN)/python -m bench.failover --mail --out bench/results/failover-mail.json
	$(BIN)/python -m bench.store
	$(BIN)/python -m bench.wal_readers
	$(BIN)/python -m bench.mail
	$(BIN)/python -m bench.imap
	$(BIN)/python -m bench.backup
	$(BIN)/python -m bench.logins
	$(BIN)/python -m bench.hostile
	$(BIN)/python -m bench.idle
	if [ "$$(id -u)" = 0 ]; then $(BIN)/python -m bench.lab; else echo "bench.lab skipped: the lab needs root"; fi

# The fault campaign: random faults against a real cluster under mail load, checked
# (bench/results/campaign.json). RUNS per backend, both backends.
RUNS ?= 150
SEED ?= 1
campaign: $(STAMP)
	./scripts/install-system-deps.sh
	$(BIN)/python -m bench.campaign --runs $(RUNS) --seed $(SEED) --backend both

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
