"""GPU check (prepared for a machine with one H100/H200; under 8 minutes): LoRA and QLoRA on
the random-weight 1B Llama shape, the kit vs the bare transformers + PEFT script, tokens/s
and peak CUDA memory, on synthetic full-length sequences (no data mirror needed).

    python bench/gpu_check.py [--pairs 2] [--steps 20] [--batch 8] [--max-length 512]
"""
import argparse
import shutil
import tempfile
from pathlib import Path

import common
from memory import random_1b_folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--methods", nargs="+", default=["lora", "qlora"])
    a = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    folder = str(random_1b_folder())
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-bench-gpu-"))
    rows = []
    for method in a.methods:
        for i in range(a.pairs):
            for which in (("kit", "bare") if i % 2 == 0 else ("bare", "kit")):
                shutil.rmtree(tmp / "bare", ignore_errors=True)
                if which == "kit":
                    wall, r = common.run_json([common.PY, "bench/memory_cell.py", folder, method, "--synthetic",
                                               "--batch", a.batch, "--max-length", a.max_length, "--steps", a.steps])
                else:
                    wall, r = common.run_json([common.PY, "bench/bare_train.py", "--method", method,
                                               "--model-dir", folder, "--synthetic", "--n", a.batch * a.steps,
                                               "--steps", a.steps, "--batch", a.batch,
                                               "--max-length", a.max_length, "--out", tmp / "bare"])
                rows.append(dict(method=method, pair=i, runner=which, wall_s=wall,
                                 tokens_per_s=r["tokens_per_s"], peak_cuda_mb=r["peak_cuda_mb"]))
                print(rows[-1], flush=True)
    summary = {}
    for method in a.methods:
        def pick(runner, key):
            return [r[key] for r in rows if r["method"] == method and r["runner"] == runner]
        summary[method] = dict(kit_tokens_per_s=common.median(pick("kit", "tokens_per_s")),
                               bare_tokens_per_s=common.median(pick("bare", "tokens_per_s")),
                               kit_peak_cuda_mb=max(pick("kit", "peak_cuda_mb")),
                               bare_peak_cuda_mb=max(pick("bare", "peak_cuda_mb")))
        summary[method]["throughput_ratio_kit_over_bare"] = (summary[method]["kit_tokens_per_s"]
                                                             / summary[method]["bare_tokens_per_s"])
        print(method, summary[method], flush=True)
    common.save("gpu_check", dict(settings=vars(a), rows=rows, summary=summary))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
