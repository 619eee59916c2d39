# `make demo` and `make test` work on a fresh machine: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint test test-pg bench bench-store clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# A full evaluation end to end on the in-process emulator: no API key, no network, no cost.
# 3 candidates answer a 10-statement spec, a jury of 4 judges on 4 providers grades them, the
# candidates meet head to head, and the leaderboard prints with the path of the HTML report.
demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/batchery eval run examples/eval/demo.yaml
	@echo "Stage jobs: $(BIN)/batchery eval status examples/eval/demo.yaml    All jobs: $(BIN)/batchery status --store demo-out/store"

# The rules ruff checks and mypy's settings are in pyproject.toml; .ci/run runs `make test`, so CI runs both.
lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks scripts
	$(BIN)/python -m mypy

# Two workers: the suite is mostly subprocesses and emulators waiting on each other, and CI has 2 cores.
test: lint
	$(BIN)/python -m pytest -n 2

# The suite with a throwaway PostgreSQL server (apt install postgresql), as CI runs it: the
# PostgreSQL tests fail rather than skip. (`make test` alone starts one itself where it can.)
test-pg: $(STAMP)
	eval "$$(scripts/pg-test-server start)" && trap 'scripts/pg-test-server stop "$$PG_TEST_DIR"' EXIT && \
	BATCHERY_REQUIRE_PG=1 $(BIN)/python -m pytest -n 2

# SQLite vs PostgreSQL: ingest, collect and export of 100,000 requests.
bench-store: $(STAMP)
	eval "$$(scripts/pg-test-server start)" && trap 'scripts/pg-test-server stop "$$PG_TEST_DIR"' EXIT && \
	$(BIN)/python benchmarks/store_backends.py

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/live.py
	$(BIN)/python benchmarks/eval_graph.py

clean:
	rm -rf $(VENV) .batchery demo-out
