# Two entry points: `make demo` (main job end to end) and `make test` (the test suite).
# Both create .venv and install everything on first use; torch is pinned to the CPU build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench-accuracy bench-throughput bench-scale check-arm64 clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/mome-edge demo

test: setup
	$(BIN)/pytest -q

bench-accuracy: setup
	$(BIN)/python benchmarks/accuracy.py

bench-throughput: setup
	$(BIN)/python benchmarks/throughput.py

# about 40 minutes on 2 cores; needs ~8 GB of free disk while the 10M-row Parquet is prepared
bench-scale: setup
	$(BIN)/python benchmarks/scale.py

# Cold start of the census models (issue 10): the deploy benchmark's census models (trained
# once under COLD_START_WORK), then cold_start.py in a fresh device venv. COLD_START_FLAGS=--realtime
# on a shared machine (SCHED_FIFO, needs root).
COLD_START_WORK ?= build/deploy-work
COLD_START_FLAGS ?=
bench-cold-start: setup
	$(BIN)/python benchmarks/deploy.py --work $(COLD_START_WORK) --sizes census --runs 5 --out $(COLD_START_WORK)/results
	$(BIN)/python benchmarks/cold_start.py $(COLD_START_WORK)/census/mome-fp32.mome $(COLD_START_WORK)/census/mome-speed.onnx \
		$(COLD_START_WORK)/census/mome-memory.onnx $(COLD_START_WORK)/census/mmoe-fp32.onnx $(COLD_START_FLAGS)

# The device install on an arm64 Debian userland under qemu-user, predictions equal to x86_64's
# (scripts/check_arm64.py; installs qemu-user-static and builds ~/.cache/mome-edge-arm64 once,
# as root). Without ARM64_MODELS it trains a tiny census model (needs MOME_DATA_DIR or
# ../shared/data) and exports it in both modes (speed and memory, .onnx + .ort);
# ARM64_MODELS="m.mome m.onnx m.ort" checks those files instead.
ARM64_MODELS ?=
ARM64_FLAGS ?=
check-arm64: setup
	$(BIN)/python scripts/check_arm64.py $(ARM64_MODELS) $(ARM64_FLAGS)

clean:
	rm -rf $(VENV) build *.egg-info
