"""Peak memory per method on SmolLM2-135M and on a random-weight 1B Llama shape.

The 1B shape is Llama-3.2-1B's body (hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192) with SmolLM2's tokenizer and vocabulary (49,152), random bf16 weights,
written once to the cache. Each method runs in its own process (peak RSS is per process).
A method whose predicted need (fp32 weights + grads + Adam states for full fine-tuning)
exceeds the memory available is recorded as skipped with the prediction, not run.

    FTSTUDY_DATA_DIR=../shared/data python bench/memory.py [--models smollm2 llama-1b-shape]
"""
import argparse
import json
import shutil
from pathlib import Path

import common

METHODS = ("full", "lora", "qlora", "dora", "ia3", "prompt_tuning")
SHAPE_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, head_dim=64)
SETTINGS = {"smollm2": dict(batch=4, max_length=192, steps=2),
            "llama-1b-shape": dict(batch=1, max_length=128, steps=2)}


def random_1b_folder() -> Path:
    """SmolLM2's config and tokenizer with the 1B body; random weights, saved once."""
    from ftstudy.compute import paths

    folder = paths.cache_dir() / "models" / "bench-llama-1b-shape"
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    small = common.smollm2_folder()
    config = AutoConfig.from_pretrained(small)
    for k, v in SHAPE_1B.items():
        setattr(config, k, v)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(small).save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def available_mb() -> float:
    return next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable")) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(SETTINGS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--dtypes", nargs="+", default=["auto"],
                    help="model dtypes to measure (auto: as the kit picks on this CPU)")
    a = ap.parse_args()
    common.data_dir()
    rows = []
    for name in a.models:
        folder = common.smollm2_folder() if name == "smollm2" else str(random_1b_folder())
        config = json.loads((Path(folder) / "config.json").read_text())
        s = SETTINGS[name]
        for dtype, method in [(d, m) for d in a.dtypes for m in a.methods]:
            if method == "full":
                from transformers import AutoConfig, AutoModelForCausalLM
                import torch
                with torch.device("meta"):
                    n = sum(p.numel() for p in AutoModelForCausalLM.from_config(
                        AutoConfig.from_pretrained(folder)).parameters())
                need = n * 16 / 2**20 + 3000  # fp32 weights + grads + 2 Adam states + runtime
                if need > available_mb() - 1500:
                    rows.append(dict(model=name, method=method, skipped=True, params=n,
                                     predicted_mb=need, available_mb=available_mb()))
                    print(f"{name} {method}: skipped, needs ~{need / 1024:.1f} GiB", flush=True)
                    continue
            _, r = common.run_json([common.PY, "bench/memory_cell.py", folder, method,
                                    "--batch", s["batch"], "--max-length", s["max_length"], "--steps", s["steps"],
                                    "--dtype", dtype])
            rows.append(dict(model=name, **r))
            print(f"{name} {method} ({r['compute_dtype']}): peak RSS {r['peak_rss_mb']:.0f} MiB, peak anonymous "
                  f"{r['peak_anon_mb']:.0f} MiB, tensors after load {r['tensor_mb_after_load']:.0f} MiB, "
                  f"{r['tokens_per_s']:.0f} tok/s", flush=True)
    common.save("memory", dict(settings=SETTINGS, shape_1b=SHAPE_1B, rows=rows))


if __name__ == "__main__":
    main()
