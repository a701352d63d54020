"""bf16 evaluation against fp32: how far `evaluation.dtype: bfloat16` (bf16 autocast over fp32
weights, log_softmax in fp32) moves each item's score, and each item's change against the
reference, which is what a study compares.

    FTSTUDY_DATA_DIR=../shared/data python bench/eval_bf16.py [--steps 8]

SmolLM2-135M-Instruct: the base model (the reference), and full fine-tuning and LoRA trained
`--steps` steps on GSM8K-train (params/cpu.yaml's shape: batch 4, 384 tokens, each method's
default learning rate; bf16 autocast where native). Each is scored on params/cpu.yaml's items in
fp32 and in bf16. Per task: the per-item (each choice of a multiple-choice item) log-likelihood
gap |bf16 - fp32|, the gap of the per-item change against the reference, the mean change in
each precision, and evaluation wall time. Needs a CPU with native bf16.
Writes bench/results/eval_bf16-<cpu>.json.
"""
import argparse
import tempfile
from pathlib import Path

import common
import yaml

DTYPES = ("float32", "bfloat16")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()

    from ftstudy.compute import data, evaluate, methods, precision, train
    from ftstudy.record import samples

    if not precision.native_bf16():
        raise SystemExit("bf16 is not native on this CPU: a bf16 evaluation would be ~7x slower here")
    params = yaml.safe_load((common.ROOT / "params" / "cpu.yaml").read_text())
    tasks = {t: s for t, s in params["evaluation"]["tasks"].items() if t != "gsm8k"}  # log-likelihood tasks
    data_dir = common.data_dir()
    model_entry = {"name": "smollm2-135m", "source": common.SMOLLM2, "dtype": "auto"}
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-eval-bf16-"))
    wall: dict = {}
    for run in ("reference", "full", "lora"):
        spec = methods.resolve("base" if run == "reference" else run,
                               training={**params["training"], "max_steps": a.steps})
        tok, model = methods.load_model(spec, model_entry)
        if run != "reference":
            model = methods.apply(model, spec, seed=0)
            examples, _ = data.training_set(tok, {"gsm8k_train": 1.0}, 48, 0, spec["training"]["max_length"], data_dir)
            train.train(model, tok, examples, spec, tmp / run / "train", seed=0)
        for dtype in DTYPES:
            out = evaluate.evaluate(model, tok, {"batch_size": 8, "dtype": dtype, "tasks": tasks},
                                    tmp / run / dtype, data_dir)
            wall[(run, dtype)] = out["wall_s"]
            print(run, dtype, f"{out['wall_s']:.1f} s", flush=True)

    def ll(run, dtype, task):
        return samples.item_logliks(tmp / run / dtype, task)

    summary = {}
    for task in tasks:
        row = {"items": int(len(ll("reference", "float32", task)))}
        gap = (ll("reference", "bfloat16", task) - ll("reference", "float32", task)).abs()
        row["reference_gap_median"], row["reference_gap_max"] = float(gap.median()), float(gap.max())
        for run in ("full", "lora"):
            change = {d: ll(run, d, task) - ll("reference", d, task) for d in DTYPES}
            gap = (ll(run, "bfloat16", task) - ll(run, "float32", task)).abs()
            diff = (change["bfloat16"] - change["float32"]).abs()
            row[run] = {"gap_median": float(gap.median()), "gap_max": float(gap.max()),
                        "change_gap_median": float(diff.median()), "change_gap_max": float(diff.max()),
                        "mean_change_fp32": float(change["float32"].mean()),
                        "mean_change_bf16": float(change["bfloat16"].mean()),
                        "change_corr": float(change["float32"].corr(change["bfloat16"]))}
        summary[task] = row
        print(task, row, flush=True)
    walls = {d: sum(w for (_, dt), w in wall.items() if dt == d) for d in DTYPES}
    print("evaluation wall, all three models:", {d: round(w, 1) for d, w in walls.items()},
          f"fp32/bf16 = {walls['float32'] / walls['bfloat16']:.2f}", flush=True)
    common.save("eval_bf16", dict(settings=dict(steps=a.steps, tasks=tasks), summary=summary,
                                  wall_s={f"{r}/{d}": w for (r, d), w in wall.items()}))


if __name__ == "__main__":
    main()
