# `make run` sets up and starts lp-live; `make test` sets up and runs the tests (both create .venv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow wheel-smoke lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: animate the packaged portrait from the webcam (ARGS="--camera video.mp4" etc.).
ARGS ?=
run: $(STAMP)
	$(BIN)/lp-live --weights synthetic $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lp_live tests

# The default suite (CI's first step); slow tests run in `make test-slow`.
test: lint
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow || [ $$? -eq 5 ]  # 5: no slow test selected

# Build the wheel, install it into a fresh venv, run it from outside the checkout.
wheel-smoke:
	PYTHON=$(PYTHON) scripts/wheel_smoke.sh

bench: $(STAMP)
	$(BIN)/lp-live bench --device cpu --json bench/results/cpu-latest.json --plot bench/results/cpu-latest.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build dist
