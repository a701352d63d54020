#!/usr/bin/env bash
# The GPU check as one command for a machine with one H100/H200 and no network, run from the
# repo root: `bash bench/gpu_run.sh` (the device tool: carry [".gpu"]). About 6 minutes; every
# step has a timeout inside a total budget (GPU_RUN_BUDGET, default 460 s), and a failed step
# does not stop the next ones.
#
# It needs the git-ignored .gpu/ folder, made on a machine with PyPI (never committed):
#   .gpu/whl/      cp312 wheels (--no-deps, versions of requirements.lock) of what that machine
#                  lacks: papermill + ipykernel stack, lm-eval (task folders pruned to gsm8k,
#                  hellaswag, mmlu), datasets, evaluate, pydantic, ...; transformers and peft at
#                  our versions; regex and fsspec at our versions (transformers and datasets pin them)
#   .gpu/bnb/      bitsandbytes 0.50.2's Python files + libbitsandbytes_cuda130.so (+ dist-info)
#   .gpu/data/     a copy of the offline data mirror (../shared/data)
#   .gpu/model/    a small random Llama + BPE tokenizer (.gpu/make_model.py) for params/gpu-check.yaml
#   .gpu/smollm2/  SmolLM2's config and tokenizer, for bench/memory.py's 1B shape (.gpu/make_1b.py)
#   .gpu/probe.py  versions, CUDA, a bitsandbytes NF4 layer, where the kit puts loaded models
#
# Steps: install the wheels into /tmp/site; register the `python3` kernel the notebooks name;
# probe; bench/gpu_check.py (LoRA and QLoRA on the 1B shape, kit vs bare; GPU_CHECK_ARGS,
# default "--pairs 1"); the grid params/gpu-check.yaml (every method once on the small model)
# and its report (tables, no book). Into $OUT: the log, gpu_check.json, the grid's results.csv
# and runs.csv, and grid.tar.gz (its run records and executed notebooks, no weights).
# The device tool's call: command "bash bench/gpu_run.sh", carry [".gpu"], timeout_s 560.
set -o pipefail
OUT=${OUT:-/tmp/gpu-run-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || return
  set -x
  export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
  export FTSTUDY_CACHE=/tmp/ftcache FTSTUDY_DATA_DIR=$PWD/.gpu/data MPLBACKEND=Agg
  local budget=${GPU_RUN_BUDGET:-460}

  # step CAP KEEP CMD...: run CMD with a timeout of at most CAP seconds, leaving KEEP seconds
  # of the budget for the steps after it; report its exit status and go on whatever it was.
  step() {
    { set +x; } 2>/dev/null  # trace the command, not this bookkeeping
    local cap=$1 keep=$2 rc; shift 2
    local t=$((budget - SECONDS - keep)); ((t > cap)) && t=$cap
    if ((t < 10)); then echo "=== SKIPPED (budget spent at ${SECONDS}s): $*"; set -x; return 0; fi
    echo "=== step at ${SECONDS}s, timeout ${t}s: $*"
    set -x
    timeout -k 10 "$t" "$@"
    { rc=$?; set +x; } 2>/dev/null
    echo "=== rc=$rc at ${SECONDS}s: $*"
    set -x
  }

  date -u; uname -a; nproc; free -g | head -2; df -h /tmp | tail -1
  nvidia-smi
  python3 -VV; command -v python3
  git log -1 --oneline 2>/dev/null; git status --short 2>/dev/null | head -40
  du -sh .gpu/* 2>/dev/null

  step 150 330 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=$PWD/.gpu/bnb:/tmp/site:$PWD/lib${PYTHONPATH:+:$PYTHONPATH}
  step 60 320 python3 -m ipykernel install --user --name python3 --display-name "Python 3 (ipykernel)"
  step 30 310 python3 -c "from jupyter_client.kernelspec import KernelSpecManager as K; print(K().find_kernel_specs())"
  step 45 300 bash -c "python3 -m pip check 2>&1 | head -40"
  step 120 290 python3 .gpu/probe.py

  # bench/gpu_check.py: the 1B shape from SmolLM2's config + tokenizer (no GGUF there).
  step 150 260 python3 .gpu/make_1b.py
  local check_args=${GPU_CHECK_ARGS-"--pairs 1"}  # GPU_CHECK_ARGS= (empty): gpu_check.py's defaults
  # shellcheck disable=SC2086  (a list of flags)
  step 300 170 python3 bench/gpu_check.py $check_args
  cp bench/results/gpu_check*.json "$OUT/" || echo "no bench/results/gpu_check*.json"
  nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv

  # The kit's own GPU path: every method once on the small model (cells are resumable).
  step 60 150 python3 -m ftstudy run params/gpu-check.yaml --dry-run
  step 240 40 python3 -m ftstudy run params/gpu-check.yaml
  step 60 20 python3 -m ftstudy report params/gpu-check.yaml --no-book

  local grid=outputs/gpu-check
  for f in runs results; do cp "$grid/$f.csv" "$OUT/$f.csv" 2>/dev/null || echo "no $grid/$f.csv"; done
  if [ -d "$grid" ]; then
    python3 - "$grid" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("runs/*/status.json")):
    s = json.loads(f.read_text())
    print(s.get("run_id"), s.get("method"), s.get("status"), f"{s.get('wall_s', 0):.1f}s", s.get("error", ""))
PY
    tar -czf "$OUT/grid.tar.gz" --exclude=artifact --exclude=checkpoints --exclude='*.safetensors' \
      --exclude='.tmp-*' "$grid" bench/results/gpu_check*.json 2>/dev/null
    ls -la "$OUT"
  fi
  echo "=== done at ${SECONDS}s"
}

main 2>&1 | tee "$OUT/gpu_run.log"
