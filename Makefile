# `make demo` and `make test` work on a fresh machine: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# A small job end to end on the in-process emulator: no API key, no network, no cost.
demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/batchery run examples/requests.jsonl --emulate --model gpt-4o-mini --batch-size 10 \
		--store demo-out/store --out demo-out/results.jsonl
	@echo
	@echo "First results (one line per input line, in input order):"
	@head -n 3 demo-out/results.jsonl | $(BIN)/python -c "import sys, json; [print(' ', (r:=json.loads(l))['id'], r['status'], '->', r['text'][:90]) for l in sys.stdin]"
	@echo
	@echo "All results: demo-out/results.jsonl    Job status: $(BIN)/batchery status requests --store demo-out/store"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .batchery demo-out
