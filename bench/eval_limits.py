"""Evaluation against its limit: the CPU's matmul rate, the model's forward throughput, and the
kit's evaluation throughput per task in tokens that must be computed (each context once), with
lm-eval's stock scoring path and with shared contexts run once (`TokenScoringHFLM`), on the
same items, alternating, in `--pairs` pairs; per-item log-likelihood gap between the two paths.

    FTSTUDY_DATA_DIR=../shared/data python bench/eval_limits.py [--pairs 2]

SmolLM2-135M-Instruct in float32, the only precision the kit shares contexts in (in bf16 the two
paths round apart by up to ~0.9 nats: bench/results/eval_limits_bf16-native-bf16.json keeps that
measurement, made with this script on 2026-12-05 before the rule); medians over pairs. Writes
bench/results/eval_limits-<cpu>.json.
"""
import argparse
import contextlib
import json
import os
import time

import common

TASKS = {"hellaswag": {"limit": 24}, "mmlu_high_school_computer_science": {"limit": 6, "num_fewshot": 5},
         "gsm8k_nll": {"limit": 24}, "alpaca_nll": {"limit": 24}}


def matmul_gflops(dtype, n: int = 1024, repeats: int = 20) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def forward_tokens_per_s(model, dtype, batch: int = 8, length: int = 128, repeats: int = 5) -> float:
    """The model's plain forward (no cache, no loss) on a full batch: the ceiling evaluation can reach."""
    import torch

    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        model(ids)
        start = time.perf_counter()
        for _ in range(repeats):
            model(ids)
    return batch * length * repeats / (time.perf_counter() - start)


def needed_tokens(folder, task: str, lm) -> dict:
    """From a run's per-sample logs: tokens lm-eval's stock path forwards (each request's context
    and continuation but the last token; single-token continuations of one context once, as its
    logits cache does), and tokens that must be computed (each distinct context once, then each
    continuation but its last token)."""
    from ftstudy.record import samples

    stock, contexts, conts, single = 0, set(), 0, set()
    for line in samples.sample_lines(folder, task):
        for ctx, cont in (a[:2] for a in json.loads(line)["arguments"]):
            c, k = lm._encode_pair(ctx, cont)  # lm-eval's own pair encoding
            if len(k) == 1:
                single.add((tuple(c), len(c)))
            else:
                stock += len(c) + len(k) - 1
            contexts.add(tuple(c))
            conts += len(k) - 1
    stock += sum(n for _, n in single)
    return {"stock": stock, "needed": sum(len(c) for c in contexts) + conts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    a = ap.parse_args()
    import tempfile
    from pathlib import Path

    import torch

    from ftstudy.compute import evaluate, models
    from ftstudy.compute.scoring import TokenScoringHFLM
    from ftstudy.record import samples

    a.dtype = "float32"  # the only precision the kit shares contexts in (see the docstring)
    data_dir = common.data_dir()
    tok, model = models.load(common.SMOLLM2, "float32")
    dtype = getattr(torch, a.dtype)
    limits = {"matmul_gflops": matmul_gflops(dtype), "forward_tokens_per_s": forward_tokens_per_s(model, dtype)}
    print(limits, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="ftstudy-eval-limits-"))
    rows, gaps, tokens = [], {}, {}
    for pair in range(a.pairs):
        for path in (("shared", "stock") if pair % 2 == 0 else ("stock", "shared")):
            os.environ["FTSTUDY_SHARE_CONTEXTS"] = "1" if path == "shared" else "0"  # the kit's own switch
            for task, settings in TASKS.items():
                ev = {"batch_size": 8, "dtype": a.dtype, "tasks": {task: settings}}
                out = evaluate.evaluate(model, tok, ev, tmp / path / task, data_dir)
                rows.append(dict(pair=pair, path=path, task=task, wall_s=out["wall_s"], **out["scoring"][task]))
                print(rows[-1], flush=True)
    os.environ.pop("FTSTUDY_SHARE_CONTEXTS")
    summary = {}
    lm = TokenScoringHFLM(pretrained=model, tokenizer=tok)
    for task in TASKS:
        tokens[task] = needed_tokens(tmp / "shared" / task, task, lm)
        x = samples.item_logliks(tmp / "shared" / task, task)
        y = samples.item_logliks(tmp / "stock" / task, task)
        gaps[task] = float((x - y).abs().max()) if len(x) else None
        wall = {p: common.median([r["wall_s"] for r in rows if r["task"] == task and r["path"] == p])
                for p in ("stock", "shared")}
        summary[task] = dict(**tokens[task], stock_wall_s=wall["stock"], shared_wall_s=wall["shared"],
                             speedup=wall["stock"] / wall["shared"], max_item_gap_nats=gaps[task],
                             stock_fraction=tokens[task]["needed"] / wall["stock"] / limits["forward_tokens_per_s"],
                             shared_fraction=tokens[task]["needed"] / wall["shared"] / limits["forward_tokens_per_s"])
        print(task, summary[task], flush=True)
    four_bit = four_bit_reference(tmp, data_dir, a.dtype, summary)
    common.save("eval_limits", dict(settings=dict(pairs=a.pairs, dtype=a.dtype, tasks=TASKS), limits=limits,
                                    rows=rows, summary=summary, four_bit=four_bit, machine=common.machine()))


def four_bit_reference(tmp, data_dir, dtype: str, summary: dict) -> dict:
    """The 4-bit base (NF4) on the same tasks, in `dtype`: scored through its weights dequantised
    once into fp32 (the kit's reference forward) and through bitsandbytes' own eval-mode forward (on
    a CPU with AVX512-BF16 it repacks the weights for a bf16 kernel); per-item gap between the
    two, and the wall time of each against the unquantised base's (shared path, same items)."""
    from ftstudy.compute import evaluate, models
    from ftstudy.record import samples

    out = {}
    for path in ("dequantised", "bitsandbytes"):
        tok, model = models.load(common.SMOLLM2, "float32", quantize_4bit=True)
        original = evaluate.dequantised_4bit
        if path == "bitsandbytes":
            evaluate.dequantised_4bit = lambda m: contextlib.nullcontext(0)
        try:
            wall = 0.0
            for task, settings in TASKS.items():
                ev = {"batch_size": 8, "dtype": dtype, "tasks": {task: settings}}
                wall += evaluate.evaluate(model, tok, ev, tmp / f"4bit-{path}" / task, data_dir)["wall_s"]
        finally:
            evaluate.dequantised_4bit = original
        out[f"{path}_wall_s"] = wall
        print(path, wall, flush=True)
    out["base_wall_s"] = sum(x["shared_wall_s"] for x in summary.values())
    out["max_item_gap_nats"] = {}
    for task in TASKS:
        x = samples.item_logliks(tmp / "4bit-dequantised" / task, task)
        y = samples.item_logliks(tmp / "4bit-bitsandbytes" / task, task)
        out["max_item_gap_nats"][task] = float((x - y).abs().max()) if len(x) else None
    print(out, flush=True)
    return out


if __name__ == "__main__":
    main()
