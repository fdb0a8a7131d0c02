# `make run` sets up and starts lp-live; `make test` sets up and runs the tests (both create .venv if missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow test-avx2 wheel-smoke lint bench clean

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

# The engines, the precision choice, the bench and the CPU tuning as on an AVX2-only CPU (no AVX-512,
# no native bf16), emulated: lp-live's own ISA detection and torch's kernels, oneDNN, inductor's C++
# and MKL capped at AVX2 (lp_live/core/cpuisa.py; tests/test_cpuisa.py checks each cap takes effect).
AVX2_ENV := LP_LIVE_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 TORCHINDUCTOR_CPP_MARCH=x86-64-v3 MKL_ENABLE_INSTRUCTIONS=AVX2
# test_batch's baseline (float32 ATen only, no precision choice) is left to the default suite.
AVX2_TESTS := tests/test_cpuisa.py tests/test_cputune.py tests/test_batch.py tests/test_engine_factory.py \
	tests/test_bench.py --deselect tests/test_batch.py::test_baseline_batches_equal_single_frames
test-avx2: $(STAMP)
	env $(AVX2_ENV) $(BIN)/pytest $(AVX2_TESTS)

# Build the wheel, install it into a fresh venv, run it from outside the checkout.
wheel-smoke:
	PYTHON=$(PYTHON) scripts/wheel_smoke.sh

bench: $(STAMP)
	$(BIN)/lp-live bench --device cpu --json bench/results/cpu-latest.json --plot bench/results/cpu-latest.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build dist
