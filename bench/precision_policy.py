"""Training memory and speed under the precision policy, against the code before it.

Before (`--before REV`, default 1bdffa8): `dtype: auto` loaded the model in bf16 on a CPU with
native bf16, and only full fine-tuning trained fp32 weights under bf16 autocast. Now every
model loads in fp32 and training autocasts to bf16 where native. Each method trains the same
steps through `bench/memory_cell.py`, once with each code, alternating, in `--pairs` pairs;
medians of tokens/s and peak RSS, on this CPU (printed).

    FTSTUDY_DATA_DIR=../shared/data python bench/precision_policy.py [--methods full lora qlora]
"""
import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import common


def worktree(rev: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ftstudy-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=common.ROOT, check=True,
                   capture_output=True)
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="1bdffa8")
    ap.add_argument("--methods", nargs="+", default=["full", "lora", "qlora", "dora", "ia3", "prompt_tuning"])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    common.data_dir()
    before = worktree(a.before)
    folder = common.smollm2_folder()
    rows = []
    try:
        for method in a.methods:
            runs = {"before": [], "after": []}
            for _ in range(a.pairs):
                for label, lib in (("before", before / "lib"), ("after", common.ROOT / "lib")):
                    env = {**common.env(), "PYTHONPATH": str(lib)}
                    out = subprocess.run([common.PY, str(common.ROOT / "bench" / "memory_cell.py"), folder, method,
                                          "--batch", "4", "--max-length", "192", "--steps", str(a.steps)],
                                         cwd=common.ROOT, env=env, capture_output=True, text=True, check=True)
                    runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            row = {"method": method}
            for label, rs in runs.items():
                row[label] = dict(compute_dtype=rs[0]["compute_dtype"],
                                  tokens_per_s=statistics.median(r["tokens_per_s"] for r in rs),
                                  peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in rs),
                                  tensor_mb_after_load=rs[0]["tensor_mb_after_load"],
                                  train_loss=[r["train_loss"] for r in rs])
            rows.append(row)
            b, n = row["before"], row["after"]
            print(f"{method}: tokens/s {b['tokens_per_s']:.0f} -> {n['tokens_per_s']:.0f} "
                  f"({n['tokens_per_s'] / b['tokens_per_s']:.2f}x), peak RSS {b['peak_rss_mb']:.0f} -> "
                  f"{n['peak_rss_mb']:.0f} MiB, weights after load {b['tensor_mb_after_load']:.0f} -> "
                  f"{n['tensor_mb_after_load']:.0f} MiB", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=common.ROOT, capture_output=True)
    common.save("precision_policy", dict(before=a.before, steps=a.steps, pairs=a.pairs, rows=rows))


if __name__ == "__main__":
    main()
