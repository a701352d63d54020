"""Training overhead: one grid cell through the kit vs a bare transformers + PEFT script.

Same model, data, steps, batch, sequence length and dtype (the `params/cpu.yaml` cell, with
evaluation off), for full, LoRA and QLoRA; kit and bare alternate, `--pairs` times each.
The kit's time is the cell as the grid runs it (papermill, kernel, imports, load, train,
save, metrics); the bare time is the whole `python bare_train.py` process.

    FTSTUDY_DATA_DIR=../shared/data python bench/train_overhead.py [--pairs 3]
"""
import argparse
import copy
import shutil
import tempfile
from pathlib import Path

import yaml

import common

METHODS = ("full", "lora", "qlora")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    a = ap.parse_args()
    data_dir = common.data_dir()
    base = yaml.safe_load((common.ROOT / "params" / "cpu.yaml").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-bench-train-"))
    p = copy.deepcopy(base)
    p.update(study="bench-train", output_dir=str(tmp / "kit"), methods={m: {} for m in a.methods},
             train_data={"gsm8k": {"gsm8k_train": 1.0}}, evaluation={"batch_size": 8, "tasks": {}})
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    tr = base["training"]
    model_dir = common.smollm2_folder()
    rows = []
    for method in a.methods:
        def run(which, i, method=method):
            shutil.rmtree(tmp / "kit", ignore_errors=True)
            shutil.rmtree(tmp / "bare", ignore_errors=True)
            if which == "kit":
                proc_wall, r = common.run_json([common.PY, "bench/kit_cell.py", params, method, "gsm8k"])
                if r.get("status") != "done":
                    raise RuntimeError(f"kit cell {method} failed: {r}")
                wall = r["cell_wall_s"]
            else:
                proc_wall, r = common.run_json([
                    common.PY, "bench/bare_train.py", "--method", method, "--model-dir", model_dir,
                    "--data", data_dir / "gsm8k" / "train.jsonl", "--n", base["train_sizes"][0],
                    "--steps", tr["max_steps"], "--batch", tr["batch_size"],
                    "--max-length", tr["max_length"], "--out", tmp / "bare"])
                wall = proc_wall
            print(f"{method} pair {i} {which}: {wall:.1f} s, {r['tokens_per_s']:.0f} tok/s, "
                  f"loss {r['train_loss']:.4f}", flush=True)
            return dict(method=method, wall_s=wall, process_wall_s=proc_wall,
                        train_wall_s=r["train_wall_s"], train_tokens=r["train_tokens"],
                        tokens_per_s=r["tokens_per_s"], train_loss=r["train_loss"])
        rows += common.alternating(a.pairs, ("kit", "bare"), run)
    summary = {}
    for method in a.methods:
        def pick(runner, key):
            return [r[key] for r in rows if r["method"] == method and r["runner"] == runner]
        ratios = [k / b for k, b in zip(pick("kit", "wall_s"), pick("bare", "wall_s"))]
        loop = [k / b for k, b in zip(pick("kit", "train_wall_s"), pick("bare", "train_wall_s"))]
        summary[method] = dict(
            wall_ratio_median=common.median(ratios), wall_ratios=ratios,
            train_loop_ratio_median=common.median(loop),
            kit_wall_s=common.median(pick("kit", "wall_s")), bare_wall_s=common.median(pick("bare", "wall_s")),
            kit_tokens_per_s=common.median(pick("kit", "tokens_per_s")),
            bare_tokens_per_s=common.median(pick("bare", "tokens_per_s")),
            same_tokens=set(pick("kit", "train_tokens")) == set(pick("bare", "train_tokens")),
            kit_loss=pick("kit", "train_loss")[0], bare_loss=pick("bare", "train_loss")[0])
        print(method, summary[method], flush=True)
    common.save("train_overhead", dict(settings=dict(pairs=a.pairs, training=tr, n=base["train_sizes"][0]),
                                       rows=rows, summary=summary))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
