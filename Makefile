# One command sets everything up and checks it: `make test` (creates .venv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check lp_live tests

# The default suite (CI's first step); slow tests run in `make test-slow`.
test: lint
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow || [ $$? -eq 5 ]  # 5: no slow test selected

bench: $(STAMP)
	$(BIN)/lp-live bench --device cpu --json bench/results/cpu-latest.json --plot bench/results/cpu-latest.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
