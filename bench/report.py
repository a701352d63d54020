"""Write BENCHMARKS.md from bench/results/*.json: every figure, its target, the machine, and
the commands that reproduce it. Sections not yet run are listed as such.

    python bench/report.py
"""
import sys

import common

COMMANDS = """```bash
make setup
export FTSTUDY_DATA_DIR=../shared/data     # the offline mirror
make bench                                  # every section below, then this file
# or one section at a time:
.venv/bin/python bench/study.py             # 4. make study: clean, rerun, one change
.venv/bin/python bench/notebook_overhead.py # 3. papermill + kernel + imports
.venv/bin/python bench/eval_vs_cli.py       # 2. kit vs python -m lm_eval
.venv/bin/python bench/train_overhead.py    # 1. kit cell vs bare transformers + PEFT
.venv/bin/python bench/memory.py            # 5. peak memory per method, 135M and 1B shape
bash bench/gpu_run.sh                       # 6. on a GPU machine only (with the carried .gpu/)
.venv/bin/python bench/cell_profile.py      # 7. where a default cell's time goes
.venv/bin/ftstudy run params/cpu-sweep.yaml && .venv/bin/python bench/sweep_profile.py   # 9.
.venv/bin/python bench/estimate_check.py params/cpu-sweep.yaml  # 8. (after 9)
.venv/bin/python bench/precision_policy.py  # 12. training memory and speed, precision policy before/after
.venv/bin/python bench/eval_limits.py       # 14. evaluation against the forward's throughput
.venv/bin/python bench/eval_bf16.py         # 15. what a bf16 evaluation moves, and saves
.venv/bin/python bench/train_limit.py       # 16. training: kit vs bare loop vs the matmul ceiling
.venv/bin/python bench/long_cell.py --padding-free  # 16b. a 200-step cell, per step
.venv/bin/python bench/long_cell.py --padding-free --compile --steps 12  # 16c. compiled, cold and warm
.venv/bin/python bench/report.py            # rewrite BENCHMARKS.md from bench/results/
```"""


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min ({s:.0f} s)" if s >= 120 else f"{s:.1f} s"


def train_section(r) -> list[str]:
    t = r["settings"]["training"]
    out = [f"Cell: SmolLM2-135M-Instruct, GSM8K-train n={r['settings']['n']}, {t['max_steps']} steps x batch "
           f"{t['batch_size']}, max_length {t['max_length']}, evaluation off; {r['settings']['pairs']} "
           "alternating kit/bare pairs per method. Kit = the cell as the grid runs it (papermill, kernel, "
           "imports, load, train, save, metrics.json); bare = the whole `python bench/bare_train.py` process.", "",
           "| method | kit wall | bare wall | wall ratio kit/bare (median) | train-loop ratio | kit tok/s | bare tok/s | same loss | target <= 1.05 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, s in r["summary"].items():
        out.append(f"| {m} | {s['kit_wall_s']:.1f} s | {s['bare_wall_s']:.1f} s | {s['wall_ratio_median']:.3f} "
                   f"({', '.join(f'{x:.2f}' for x in s['wall_ratios'])}) | {s['train_loop_ratio_median']:.3f} | "
                   f"{s['kit_tokens_per_s']:.0f} | {s['bare_tokens_per_s']:.0f} | "
                   f"{'yes' if abs(s['kit_loss'] - s['bare_loss']) < 1e-6 else 'no'} | "
                   f"{verdict(s['wall_ratio_median'] <= 1.05)} |")
    return out


def eval_section(r) -> list[str]:
    s = r["summary"]
    tasks = ", ".join(f"{t} ({v['limit']})" for t, v in r["settings"]["tasks"].items())
    return [f"Tasks (limit): {tasks}; batch 8; SmolLM2-135M-Instruct bf16; {r['settings']['pairs']} alternating pairs. "
            "Kit = load the folder once, every task in memory; CLI = `python -m lm_eval` on the same folder and "
            "the kit's task YAMLs (`--include_path`), once for the upstream tasks and once with "
            "`--apply_chat_template` for the log-likelihood tasks.", "",
            "| kit wall | CLI wall | ratio kit/CLI (median) | metrics identical | target ratio <= 1.0 |",
            "|---|---|---|---|---|",
            f"| {s['kit_wall_s']:.1f} s | {s['cli_wall_s']:.1f} s | {s['ratio_median']:.2f} | "
            f"{'yes, all ' + str(s['metrics_compared']) if s['metrics_identical'] else 'NO: ' + '; '.join(s['mismatches'])} | "
            f"{verdict(s['ratio_median'] <= 1.0 and s['metrics_identical'])} |"]


def notebook_section(r) -> list[str]:
    m = r["median"]
    return [f"Median of {r['repeats']} runs each.", "",
            "| what | seconds |", "|---|---|",
            f"| papermill, empty notebook (kernel start + stop) | {m['empty_immediate']:.2f} |",
            f"| papermill, the method notebooks' imports, immediate kernel stop (as the grid runs) | {m['imports_immediate']:.2f} |",
            f"| same, graceful kernel stop (papermill's default; the grid used it before) | {m['imports_graceful']:.2f} |",
            f"| of which the import cell itself | {m['imports_cell']:.2f} |",
            f"| the same imports in a plain `python -c` (a bare script pays these too) | {m['plain_python_imports']:.2f} |",
            f"| overhead of the notebook itself (papermill - plain python) | {m['notebook_only_overhead_s']:.2f} |",
            "",
            f"Target <= 5 s for papermill start + kernel + imports: {verdict(m['imports_immediate'] <= 5)}. "
            f"The notebook machinery costs {m['empty_immediate']:.1f} s; the rest is importing torch, transformers, "
            "PEFT (which imports bitsandbytes) and lm-eval, which any script doing this work imports."]


def demo_target(r) -> str:
    """The default demo's wall-time goal on the CPU kind that ran it: 15 minutes where bf16 is
    native, 30 on an AVX2-only CPU; a result of an earlier default is judged by its own goal."""
    if r.get("target_s") is None:
        return f"<= 20 min (that default's goal): {verdict(r['clean_s'] <= 1200)}"
    return f"<= {r['target_s'] / 60:.0f} min on this CPU kind: {verdict(r['clean_s'] <= r['target_s'])}"


def study_section(r) -> list[str]:
    out = [f"`make study` on `params/cpu.yaml` ({r['cells_total']} cells).", ""]
    if r.get("note"):
        out += [r["note"], ""]
    out += ["| run | wall | target |", "|---|---|---|",
            f"| clean outputs/ | {fmt_s(r['clean_s'])} | {demo_target(r)} |"]
    if r.get("rerun_s") is not None:
        out.append(f"| rerun, nothing changed | {fmt_s(r['rerun_s'])} | <= 60 s: {verdict(r['rerun_s'] <= 60)} |")
    if r.get("changed_s") is not None:
        out.append(f"| rerun after `{r['changed']}` | {fmt_s(r['changed_s'])} | only the changed cells: recomputed "
                   f"{', '.join(r['recomputed_methods'])}: {len(r['recomputed_methods'])} of {r['cells_total']} cells, "
                   f"{r['cells_total'] - len(r['recomputed_methods'])} reused: "
                   f"{verdict(set(r['recomputed_methods']) == {'ia3'})} |")
    memory = any(c.get("eval_added_anon_mb") is not None for c in r["cells"])
    out += ["", "Per cell (clean run" + ("; evaluation's precision, the memory it added to the cell's process, "
                                         "and the 4-bit weights it dequantised" if memory else "") + "):", "",
            "| method | training data | cell wall | train | eval |" + (" eval dtype | eval adds | dequantised |"
                                                                      if memory else ""),
            "|---|---|---|---|---|" + ("---|---|---|" if memory else "")]
    for c in sorted(r["cells"], key=lambda c: (c["method"], str(c["train_data"] or ""))):
        row = (f"| {c['method']} | {c['train_data'] or '-'} | {c['wall_s']:.0f} s | "
               f"{(c['train_wall_s'] or 0):.0f} s | {(c['eval_wall_s'] or 0):.0f} s |")
        if memory:
            row += (f" {c.get('eval_dtype')} | {c['eval_added_anon_mb']:.0f} MiB | "
                    f"{c['eval_dequantised_mb']:.0f} MiB |")
        out.append(row)
    out.append(f"\nSum of cell walls {r['cell_wall_sum_s']:.0f} s; the rest is setup check, results collection "
               "and the book build.")
    return out


def memory_section(r) -> list[str]:
    s = r["settings"]
    out = [f"Peak memory of a process that loads the model through the kit, wraps it and trains "
           f"{s['smollm2']['steps']} steps (SmolLM2: batch {s['smollm2']['batch']} x {s['smollm2']['max_length']}; "
           f"1B shape: batch {s['llama-1b-shape']['batch']} x {s['llama-1b-shape']['max_length']}). "
           "1B shape = hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, SmolLM2 vocabulary, "
           "random bf16 weights on disk.", "",
           "Peak RSS counts the file pages of memory-mapped safetensors weights once touched (QLoRA touches "
           "every weight when it quantises at load); *peak anonymous* memory (RssAnon, sampled every 20 ms "
           "over load and training) is what the process really holds, and *tensors* the bytes of the "
           "model's parameters and buffers after load.", "",
           "| model | method | dtype | peak RSS | peak anonymous | tensors after load | trainable params | artifact |",
           "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if x.get("skipped"):
            out.append(f"| {x['model']} | {x['method']} | | not run: needs ~{x['predicted_mb'] / 1024:.1f} GiB "
                       f"({x['params'] / 1e9:.2f}B params x 16 bytes + runtime), {x['available_mb'] / 1024:.1f} GiB "
                       "available | | | | |")
            continue
        anon = f"{x['peak_anon_mb'] / 1024:.2f} GiB" if x.get("peak_anon_mb") else "not measured"
        tensors = f"{x['tensor_mb_after_load'] / 1024:.2f} GiB" if x.get("tensor_mb_after_load") else "not measured"
        out.append(f"| {x['model']} | {x['method']} | {x.get('compute_dtype', 'bfloat16')} | "
                   f"{x['peak_rss_mb'] / 1024:.2f} GiB | {anon} | {tensors} | {x['trainable_params']:,} | "
                   f"{x['artifact_bytes'] / 2**20:.1f} MiB |")
    by = {(x["model"], x.get("compute_dtype", "bfloat16"), x["method"]): x for x in r["rows"] if not x.get("skipped")}
    for (model, dtype, method), x in sorted(by.items()):
        lora = by.get((model, dtype, "lora"))
        if method == "qlora" and lora:
            ratios = f"peak RSS {x['peak_rss_mb'] / lora['peak_rss_mb']:.2f}"
            if x.get("peak_anon_mb") and lora.get("peak_anon_mb"):
                ratios += f", peak anonymous {x['peak_anon_mb'] / lora['peak_anon_mb']:.2f}"
            out.append(f"\nQLoRA / LoRA on {model} ({dtype}): {ratios}.")
    return out


def precision_section(r) -> list[str]:
    out = [f"SmolLM2-135M, {r['steps']} training steps of batch 4 x 192 tokens through the kit "
           f"(`bench/memory_cell.py`), each method once with the code before the policy (commit {r['before']}: "
           "`dtype: auto` loaded the model in bf16 where bf16 is native, and only full fine-tuning autocast from "
           "fp32 weights) and once with today's (every model loads in fp32, training autocasts to bf16 where "
           f"native), alternating, {r['pairs']} pairs, medians.", "",
           "| method | training dtype | tokens/s before | tokens/s after | after / before | peak RSS before | "
           "peak RSS after | weights after load, before -> after |", "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        b, a = x["before"], x["after"]
        out.append(f"| {x['method']} | {a['compute_dtype']} | {b['tokens_per_s']:.0f} | {a['tokens_per_s']:.0f} | "
                   f"{a['tokens_per_s'] / b['tokens_per_s']:.2f} | {b['peak_rss_mb']:.0f} MiB | {a['peak_rss_mb']:.0f} MiB | "
                   f"{b['tensor_mb_after_load']:.0f} -> {a['tensor_mb_after_load']:.0f} MiB |")
    return out


def gpu_section(r) -> list[str]:
    if r is None:
        return ["Not run: this task had no GPU machine (the device tool's status: not drawn). "
                "`bench/gpu_check.py` is ready: LoRA and QLoRA on the 1B shape, kit vs bare, tokens/s and "
                "peak CUDA memory, synthetic sequences (no data mirror needed), `--pairs 2 --steps 20 --batch 8 "
                "--max-length 512` by default, sized for under 8 minutes on one H100/H200."]
    m, st = r["machine"], r["settings"]
    out = [f"Device: {m['gpu']} (host {m['cpu']}, {m['cores']} cores; torch {m['torch']}, Python {m['python']}), "
           f"run {r['finished']} by `bash bench/gpu_run.sh`. `bench/gpu_check.py --pairs "
           f"{st['pairs']}`: {', '.join(st['methods'])} on the random-weight 1B Llama shape, {st['steps']} steps, batch "
           f"{st['batch']} x {st['max_length']} synthetic tokens, bf16 autocast; the kit's cell (`memory_cell.py`) "
           "against the bare transformers + PEFT script. One pair per method: a single measurement each, its "
           "noise unmeasured; and the two sides do not train in one precision setup (the bare script loads bf16 "
           "weights without autocast, QLoRA through `prepare_model_for_kbit_training`; the kit keeps fp32 weights "
           "under bf16 autocast), so a ratio compares setups, not the kit's overhead alone.", "",
           "| method | kit tok/s | bare tok/s | ratio | kit peak CUDA | bare peak CUDA |", "|---|---|---|---|---|---|"]
    for method, s in r["summary"].items():
        out.append(f"| {method} | {s['kit_tokens_per_s']:.0f} | {s['bare_tokens_per_s']:.0f} | "
                   f"{s['throughput_ratio_kit_over_bare']:.3f} | {s['kit_peak_cuda_mb']:.0f} MB | {s['bare_peak_cuda_mb']:.0f} MB |")
    grid = common.RESULTS / "gpu_grid_runs.csv"
    if grid.is_file():
        import pandas as pd

        import yaml

        g = pd.read_csv(grid)
        planned = yaml.safe_load((common.ROOT / "params" / "gpu-check.yaml").read_text())["methods"]
        missing = [m for m in planned if m not in set(g["method"])]
        overhead = (g["wall_s"] - g["train_wall_s"].fillna(0) - g["eval_wall_s"]).median()
        out += ["", f"The kit's own GPU path, same machine: `ftstudy run params/gpu-check.yaml` (a random Llama, hidden "
                "256, 4 layers; 4 steps of batch 8; fp32 evaluation of 2 GSM8K, 16 HellaSwag, 8 MMLU items and 16 "
                "items of each held-out task), every cell a papermill notebook on CUDA. "
                f"{int((g['status'] == 'done').sum())} cells finished inside the script's time budget"
                + (f"; not reached: {', '.join(missing)} (their cells run on CPU in the tests)" if missing else "")
                + f". The median cell spent {overhead:.0f} s outside training and evaluation (kernel start, "
                "imports, loading, saving).", "",
                "| cell | wall s | training s | evaluation s | train tok/s | peak CUDA MB (training) |",
                "|---|---|---|---|---|---|"]
        num = lambda v, f: "" if pd.isna(v) else format(v, f)
        for _, row in g.iterrows():
            out.append(f"| {row['method']} | {row['wall_s']:.0f} | {num(row['train_wall_s'], '.1f')} | "
                       f"{row['eval_wall_s']:.1f} | {num(row['tokens_per_s'], '.0f')} | {num(row['peak_cuda_mb'], '.0f')} |")
    return out


def profile_section(r) -> list[str]:
    """Where one default cell's time goes, and what that means for the default grid."""
    tasks = list(r["eval_lora"])
    out = [f"One default-shape cell in one process (`bench/cell_profile.py`): SmolLM2-135M in {r['compute_dtype']}, "
           f"LoRA trained {r['train_steps']} steps on GSM8K, then every task of `params/cpu.yaml` scored on "
           "the trained model and on the 4-bit base.", "",
           "| phase | seconds |", "|---|---|",
           f"| imports (torch, transformers, PEFT, lm-eval) | {r['import_s']:.1f} |",
           f"| model load (GGUF, cached conversion) | {r['load_s']:.1f} |",
           f"| training, {r['train_steps']} steps | {r['train_s']:.1f} |"]
    for label, key in (("", "eval_lora"), (" (4-bit base)", "eval_base_4bit")):
        for t in tasks:
            e = r[key][t]
            out.append(f"| evaluate {t}{label}: {e['limit']} items (build {e['build_s']:.1f} s) | {e['evaluate_s']:.1f} |")
    ev = sum(e["evaluate_s"] + e["build_s"] for e in r["eval_lora"].values())
    ev4 = sum(e["evaluate_s"] + e["build_s"] for e in r["eval_base_4bit"].values())
    g = default_grid()
    if set(tasks) != set(g["tasks"]) or r.get("eval_dtype", "float32") != g["eval_dtype"]:
        return out + ["", f"Evaluation takes {ev:.0f} s of this cell ({ev4:.0f} s on the 4-bit base), training "
                      f"{r['train_s']:.0f} s, imports and loading {r['import_s'] + r['load_s']:.0f} s. This profile "
                      "was taken on an earlier default (tasks " + ", ".join(tasks) + "), so it does not project "
                      "today's `params/cpu.yaml`; section 4 measures that grid."]
    start = r["import_s"] + r["load_s"]
    total = g["cells"] * start + g["trained"] * r["train_s"] + g["unquantised"] * ev + g["quantised"] * ev4
    out += ["", f"Evaluation takes {ev:.0f} s of a cell ({ev4:.0f} s on the 4-bit base), training "
            f"{r['train_s']:.0f} s, imports and loading {start:.0f} s. The default grid (`params/cpu.yaml`) has "
            f"{g['cells']} cells: {g['trained']} trained, {g['unquantised']} evaluated unquantised and "
            f"{g['quantised']} in 4-bit; from these phases it needs about {total / 60:.0f} minutes on this CPU, "
            f"evaluation alone {(g['unquantised'] * ev + g['quantised'] * ev4) / 60:.0f}, so the 20-minute target "
            f"for `make study` is **{'met' if total <= 1200 else 'missed'}** here without cutting evaluated items; "
            "overhead is not where the time goes (imports and loading are the small rows above; the rest is "
            "the model's forward and backward passes), so only fewer items or fewer cells would meet it. "
            "`--dry-run --calibrate` says how long the default will take on a machine before it runs."]
    return out


def default_grid() -> dict:
    """The default grid's composition: cells, trained cells, and how many are evaluated in 4-bit."""
    from ftstudy.planning import grid
    from ftstudy.config import params

    cells = grid.expand(params.load(common.ROOT / "params" / "cpu.yaml"))
    quantised = sum(bool((c.get("load") or {}).get("quantize_4bit")) for c in cells)
    trained = sum(c["method"] not in ("base", "base_4bit") and not c.get("control") for c in cells)
    ev = cells[0]["evaluation"]
    return {"cells": len(cells), "trained": trained, "quantised": quantised, "unquantised": len(cells) - quantised,
            "tasks": list(ev["tasks"]), "eval_dtype": ev["dtype"]}


def estimate_section(r) -> list[str]:
    out = ["`bench/estimate_check.py`: this machine calibrated as a fresh one would be (`--dry-run "
           "--calibrate`), every cell of a finished grid estimated from that calibration alone, against "
           "the wall times the grid recorded. Target: within a factor of 1.5.", "",
           "| params | cells | real (sum of cell walls) | estimated | ratio | calibration took | target |",
           "|---|---|---|---|---|---|---|"]
    for path, g in r["grids"].items():
        out.append(f"| {path} | {g['cells']} | {fmt_s(g['real_s'])} | {fmt_s(g['estimated_s'])} | "
                   f"{g['ratio']:.2f} | {g['calibration_s']:.0f} s | {verdict(1 / 1.5 <= g['ratio'] <= 1.5)} |")
    return out


def sweep_section(r) -> list[str]:
    out = [f"`params/cpu-sweep.yaml` from a clean output folder: {r['cells']} cells "
           f"({r['trials']} learning-rate trials, {r['study_runs']} study runs at the chosen rates with "
           f"curves, {r['references']} references). Wall time, first cell start to last cell end: "
           f"**{fmt_s(r['wall_s'])}** (target: under an hour: {verdict(r['wall_s'] <= 3600)}). "
           f"Cells that failed: {r['failed']}.", "",
           "| method | trials, wall (s) | study run, wall (s) | chosen rate | default rate |", "|---|---|---|---|---|"]
    for m in r["methods"]:
        out.append(f"| {m['method']} | {m['trials_wall_s']:.0f} | {m['run_wall_s']:.0f} | {m['chosen_rate']:.3g} | "
                   f"{m['default_rate']:.3g} |")
    return out


def figures(results: dict) -> dict:
    """PNG figures beside the JSON results: kit/bare ratios and peak memory per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = {}
    tr = results.get("train_overhead")
    if tr:
        fig, ax = plt.subplots(figsize=(5, 3))
        names = list(tr["summary"])
        for i, m in enumerate(names):
            s = tr["summary"][m]
            ax.bar(i, s["wall_ratio_median"], color="#4c72b0", alpha=0.7)
            ax.scatter([i] * len(s["wall_ratios"]), s["wall_ratios"], color="black", s=12, zorder=3)
        ax.axhline(1.05, color="#c44e52", ls="--", lw=1, label="target 1.05")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("wall time kit / bare")
        ax.set_ylim(0.8, max(1.3, max(max(tr["summary"][m]["wall_ratios"]) for m in names) + 0.05))
        ax.legend(frameon=False, fontsize=8)
        ax.set_title("One cell: kit vs bare transformers + PEFT (dots: pairs)", fontsize=9)
        fig.tight_layout()
        fig.savefig(common.RESULTS / "train_overhead.png", dpi=120)
        made["train_overhead"] = "bench/results/train_overhead.png"
    mem = results.get("memory")
    if mem:
        rows = [r for r in mem["rows"] if not r.get("skipped")]
        models = list(dict.fromkeys(r["model"] for r in mem["rows"]))
        key = lambda r: f"{r['method']} ({r.get('compute_dtype', 'bfloat16')[:4]})"  # noqa: E731
        methods = list(dict.fromkeys(key(r) for r in mem["rows"] if not r.get("skipped")))
        fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3), squeeze=False)
        for ax, model in zip(axes[0], models):
            vals = [next((r["peak_rss_mb"] / 1024 for r in rows if r["model"] == model and key(r) == m), 0)
                    for m in methods]
            ax.bar(range(len(methods)), vals, color="#55a868")
            ax.set_xticks(range(len(methods)), methods, rotation=30, fontsize=8)
            ax.set_ylabel("peak RSS, GiB")
            ax.set_title(f"{model} ({mem.get('cpu_kind') or 'earlier session'})", fontsize=9)
            for i, v in enumerate(vals):
                ax.text(i, v, f"{v:.1f}" if v else "not run", ha="center", va="bottom", fontsize=7)
        fig.tight_layout()
        fig.savefig(common.RESULTS / "memory.png", dpi=120)
        made["memory"] = "bench/results/memory.png"
    return made


def limits_section(r) -> list[str]:
    """The kit's evaluation per task against the model's forward throughput, stock path vs
    shared contexts, in tokens that must be computed (each context once)."""
    lim, st = r["limits"], r["settings"]
    out = [f"SmolLM2-135M-Instruct evaluated in {st['dtype']} (`bench/eval_limits.py`, {st['pairs']} alternating "
           f"pairs, medians). This CPU's {st['dtype']} matmul: {lim['matmul_gflops']:.0f} GFLOP/s (1024^3); the "
           f"model's plain forward, batch 8 x 128 tokens: {lim['forward_tokens_per_s']:.0f} tokens/s, the "
           "ceiling. A task's fraction is the tokens that must be computed (each distinct context once, then "
           "each continuation but its last token) per second of the whole task (task building, data, "
           "scoring, logs), over that ceiling. lm-eval's stock path forwards every request's context again "
           "(single-token answers of one context once).", "",
           "| task | tokens lm-eval forwards | tokens needed | stock s | shared s | speed-up | stock fraction | "
           "shared fraction | max per-item gap (nats) |", "|---|---|---|---|---|---|---|---|---|"]
    for task, x in r["summary"].items():
        gap = "" if x["max_item_gap_nats"] is None else f"{x['max_item_gap_nats']:.1e}"
        out.append(f"| {task} | {x['stock']} | {x['needed']} | {x['stock_wall_s']:.1f} | {x['shared_wall_s']:.1f} | "
                   f"{x['speedup']:.2f} | {x['stock_fraction']:.2f} | {x['shared_fraction']:.2f} | {gap} |")
    same = [task for task in r["summary"] if not any(x["shared_context"] for x in r["rows"]
                                                      if x["task"] == task and x["path"] == "shared")]
    if same:
        out += ["", "Tasks without a shared context (" + ", ".join(same) + ") differ between the two sides only in "
                "batching: the kit runs their requests in batches of like length, lm-eval in batches of 8 padded "
                "to the longest (speed-ups " + ", ".join(f"{r['summary'][t]['speedup']:.2f}" for t in same) + ")."]
    if st["dtype"] != "float32":
        out += ["", "In bf16 the two paths round differently (other batch shapes, other padding): their per-item gaps "
                "are bf16's rounding, the size of its distance from fp32 (section 15). Since this measurement the "
                "kit shares contexts in fp32 only, so that in bf16 every run and its reference (prompt tuning's "
                "included) take one path: a bf16 evaluation runs at the stock column's speed."]
    q = r.get("four_bit")
    if q:
        gaps = ", ".join(f"{t} {g:.2g}" for t, g in q["max_item_gap_nats"].items() if g is not None)
        out += ["", f"The 4-bit base (NF4) on the same items, all four tasks: scored through its weights dequantised "
                f"once into fp32 (the kit's reference forward for a 4-bit model), scored in {st['dtype']}, in {q['dequantised_wall_s']:.0f} s of "
                f"evaluation, {q['dequantised_wall_s'] / q['base_wall_s']:.2f}x the unquantised base's {q['base_wall_s']:.0f} s; "
                f"through bitsandbytes' own eval-mode forward in {q['bitsandbytes_wall_s']:.0f} s. The largest "
                f"per-item gap between the two, in nats: {gaps}"
                + (" (this CPU has native bf16, where bitsandbytes computes that forward in bf16)." if
                   r["machine"].get("native_bf16") else ".")]
    return out


def bf16_section(r) -> list[str]:
    """How far a bf16 evaluation (autocast over fp32 weights) moves per-item scores and per-item
    changes against the reference, per task, and what it saves."""
    st, walls = r["settings"], r["wall_s"]
    fp32 = sum(v for k, v in walls.items() if k.endswith("/float32"))
    bf16 = sum(v for k, v in walls.items() if k.endswith("/bfloat16"))
    out = [f"SmolLM2-135M-Instruct (`bench/eval_bf16.py`): the base model (the reference) and full fine-tuning "
           f"and LoRA after {st['steps']} steps on GSM8K-train, each scored on params/cpu.yaml's items in float32 "
           "and in bfloat16 (`evaluation.dtype`: bf16 autocast over the fp32 weights, log_softmax in "
           "fp32; measured before the kit shared contexts in fp32 only, so both precisions here ran the "
           "shared-context path, and bf16 evaluation now takes lm-eval's: section 14b). A gap is |bf16 - fp32| of one choice's (or answer's) log-likelihood, in nats; a change is "
           "run minus reference on the same item, in one precision; the correlation is between the per-item "
           "changes in the two precisions.", "",
           "| task | items | reference gap, median / max | method | gap, median / max | change gap, median / max "
           "| mean change fp32 | mean change bf16 | correlation of changes |", "|---|---|---|---|---|---|---|---|---|"]
    for task, x in r["summary"].items():
        for method in ("full", "lora"):
            y = x[method]
            out.append(f"| {task} | {x['items']} | {x['reference_gap_median']:.3f} / {x['reference_gap_max']:.3f} | "
                       f"{method} | {y['gap_median']:.3f} / {y['gap_max']:.3f} | {y['change_gap_median']:.3f} / "
                       f"{y['change_gap_max']:.3f} | {y['mean_change_fp32']:+.3f} | {y['mean_change_bf16']:+.3f} | "
                       f"{y['change_corr']:.2f} |")
    out += ["", f"Evaluation wall time of the three models: {fp32:.0f} s in float32, {bf16:.0f} s in bfloat16 "
            f"({fp32 / bf16:.2f}x, both on the shared-context path)."]
    return out


def train_limit_section(r) -> list[str]:
    """Section 16: the kit's training step, padded and padding-free, against a bare loop on the
    same batches and against this CPU's matmul rate; where a step's time goes; other options."""
    st, rows = r["settings"], r["rows"]
    gf = r["matmul_gflops"]
    kit, kit_pf, bare, bare_pf = "kit", "kit, padding-free", "bare", "bare, padding-free"
    out = [f"SmolLM2-135M-Instruct (fp32 weights), GSM8K-train, batch {st['batch']}, max_length {st['max_length']}, "
           f"training in **{st['dtype']}**, {st['threads']} threads. Per method, {st['rounds']} rounds of each runner in "
           f"turn over the batches the kit's Trainer drew; medians over {st['steps']} timed steps a round (the first "
           f"{st['warmup']} of each round left out). Matmul ceiling at the model's shapes: fp32 {gf['float32']:.0f} "
           f"GFLOP/s, bf16 {gf['bfloat16']:.0f} GFLOP/s. The fraction of it is the useful FLOPs (linear layers on real "
           "tokens, causal attention within each example) a second, a lower bound for prompt tuning (its virtual "
           "tokens) and DoRA (its weight norms); tokens/s count real tokens. *kit* is today's "
           "path, *padding-free* the `training.padding_free` option, *bare* a plain loop (forward, backward, "
           "clipping, fused AdamW) with the same batches and layout.", "",
           "| method | padding | kit step | kit, padding-free | bare | bare, padding-free | kit / bare | "
           "kit tok/s | fraction of ceiling | first step |",
           "|---|---|---|---|---|---|---|---|---|---|"]

    def pair(values, name_a, name_b, fmt):
        a_, b_ = values.get(name_a), values.get(name_b)
        return fmt(a_) + (f" -> {fmt(b_)}" if b_ is not None else "")

    for x in rows:
        sec = x["step_s"]
        ratio = {kit: sec[kit] / sec[bare]}
        if kit_pf in sec:
            ratio[kit_pf] = sec[kit_pf] / sec[bare_pf]
        out.append(
            f"| {x['method']} | {1 - x['tokens_per_step'] / x['padded_per_step']:.0%} | {sec[kit]:.2f} s | "
            f"{f'{sec[kit_pf]:.2f} s' if kit_pf in sec else 'cannot pack'} | {sec[bare]:.2f} s | "
            f"{f'{sec[bare_pf]:.2f} s' if bare_pf in sec else '–'} | {pair(ratio, kit, kit_pf, lambda v: f'{v:.2f}')} | "
            f"{pair(x['tokens_per_s'], kit, kit_pf, lambda v: f'{v:.0f}')} | "
            f"{pair(x['fraction'], kit, kit_pf, lambda v: f'{v:.2f}')} | {x['first_step_s']:.1f} s |")
    parts = ("forward", "backward", "clip", "optimizer")
    out += ["", "Where a kit step's time goes (medians of hook-timed parts, seconds; *rest* is the step's median "
            "minus theirs: data, collation and the Trainer's own work, within the noise, so it can fall below "
            "zero; a process's first step adds its warm-up, last column above):", "",
            "| method | path | " + " | ".join(parts) + " | rest |", "|---" * (len(parts) + 3) + "|"]
    for x in rows:
        for path, prof in x["profile"].items():
            rest = x["step_s"][path] - sum(prof[p] for p in parts)
            out.append(f"| {x['method']} | {path} | " + " | ".join(f"{prof[p]:.3f}" for p in parts) + f" | {rest:.3f} |")
    options = [x for x in rows if x.get("options_step_s")]
    if options:
        names = list(options[0]["options_step_s"])
        out += ["", "Other options, once each on the bare loop over the same batches (median seconds a step; "
                "compare with the bare padded column above):", "",
                "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        out += [f"| {x['method']} | " + " | ".join(f"{x['options_step_s'][n]:.2f} s" for n in names) + " |"
                for x in options]
    return out


def long_cell_section(r) -> list[str]:
    """Section 16b: one long cell through `ftstudy run`, per step from its own record."""
    options = ", ".join(k.replace("_", "-") for k in ("padding_free", "compile") if r.get(k)) or "none"
    return [f"`{r['method']}`, {r['steps']} steps over {r['examples']} distinct GSM8K-train examples (batch 4, one "
            f"epoch), training in {r['dtype']}, fast-path options: {options}; from the run's `metrics.json` "
            "(`step_costs`: each step's wall and the process's anonymous memory after it).", "",
            "| | value |", "|---|---|",
            f"| training wall; `ftstudy run` wall (the base reference's cell and 8-item evaluations included) | "
            f"{fmt_s(r['train_wall_s'])}; {fmt_s(r['grid_wall_s'])} |",
            f"| tokens/s (real tokens) | {r['tokens_per_s']:.0f} |",
            f"| first step (warm-up included) | {r['first_step_s']:.1f} s |",
            f"| median step; first tenth; last tenth | {r['median_step_s']:.2f} s; {r['first_tenth_median_s']:.2f} s; "
            f"{r['last_tenth_median_s']:.2f} s |",
            f"| anonymous memory after step 1; at a tenth; last; most | {r['anon_mb_after_step_1']:.0f}; "
            f"{r['anon_mb_at_tenth']:.0f}; {r['anon_mb_last']:.0f}; {r['anon_mb_max']:.0f} MiB |", "",
            "Progress lines `ftstudy run` printed while it trained (first and last three):", "", "```",
            *r["progress_lines"], "```"]


def compile_section(r) -> list[str]:
    """Section 16c: `training.compile` through the kit, from an empty compile cache and from a filled one."""
    c, w = r["cold"], r["warm"]
    options = ", ".join(k.replace("_", "-") for k in ("padding_free", "compile") if c.get(k))
    return [f"`{c['method']}`, {c['steps']} steps (batch 4), training in {c['dtype']}, options: {options}; the "
            "cell run twice by `ftstudy run`, first with an empty compile cache (cold), then with the cache that "
            "run filled (warm). Compilation happens in the first step. Compare the median step with section 16b.",
            "", "| | cold cache | warm cache |", "|---|---|---|",
            f"| first step (compilation included) | {c['first_step_s']:.1f} s | {w['first_step_s']:.1f} s |",
            f"| median later step | {c['median_step_s']:.2f} s | {w['median_step_s']:.2f} s |",
            f"| training wall | {fmt_s(c['train_wall_s'])} | {fmt_s(w['train_wall_s'])} |",
            f"| peak anonymous memory | {c['peak_anon_mb']:.0f} MiB | {w['peak_anon_mb']:.0f} MiB |"]


SECTIONS = [("study", "4. The study", study_section),
            ("train_overhead", "1. Training overhead: kit vs bare transformers + PEFT", train_section),
            ("eval_vs_cli", "2. Evaluation: kit vs `python -m lm_eval`", eval_section),
            ("notebook_overhead", "3. Notebook overhead per cell", notebook_section),
            ("memory", "5. Memory per method", memory_section),
            ("profile", "7. Where a cell's time goes", profile_section),
            ("estimate", "8. The dry-run estimate against the real run", estimate_section),
            ("sweep", "9. The learning-rate sweep profile", sweep_section),
            ("precision_policy", "12. The precision policy: training before and after", precision_section),
            ("eval_limits", "14. Evaluation against its limit: shared contexts", limits_section),
            ("eval_limits_bf16", "14b. The same in bf16 (`evaluation.dtype: bfloat16`, where native)", limits_section),
            ("eval_bf16", "15. bf16 evaluation against fp32", bf16_section),
            ("train_limit", "16. Training against its limit", train_limit_section),
            ("long_cell", "16b. A long cell through the kit", long_cell_section),
            ("long_cell_compile", "16c. Compiled training through the kit", compile_section)]


def committed_study_section(folder=common.ROOT / "results" / "cpu-study") -> list[str]:
    """Where the committed CPU study's time went, read from its own run records (runs.csv,
    tuning.csv, each run's status.json and env.json): per design and method, the cells, their
    summed and median walls, and training's and evaluation's medians."""
    import json

    import pandas as pd

    sys.path.insert(0, str(common.ROOT / "lib"))
    from ftstudy.narrative import answers
    from ftstudy.record import export

    runs = pd.read_csv(folder / "runs.csv", dtype={"run_id": str})
    trials = pd.read_csv(folder / "tuning.csv", dtype={"run_id": str})
    statuses = [json.loads(f.read_text()) for f in sorted((folder / "runs").glob("*/status.json"))]
    envs = [json.loads(f.read_text()) for f in sorted((folder / "runs").glob("*/env.json"))]
    cpus = {(e["hardware"]["cpu"].get("torch_cpu_capability"), e["hardware"]["cpu"].get("native_bf16"),
             e.get("compute_dtype"), e["hardware"].get("cpus")) for e in envs}
    evaluation = ", ".join(sorted(runs["eval_dtype"].dropna().unique()))
    first = tuple(answers.main_condition(pd.read_csv(folder / "aggregated.csv"), pd.read_csv(folder / "contrasts.csv")))

    def design(r) -> str:
        if r["method"] in ("base", "base_4bit"):
            return "reference"
        if (r["model"], r["train_data"], r["train_size"]) == first:
            return "main condition"
        if r["model"] != first[0]:
            return f"base model {r['model']}"
        if r["train_data"] != first[1]:
            return f"training data {r['train_data']}"
        return f"{int(r['train_size'])} examples, {int(r['steps'])} steps"

    runs["design"] = runs.apply(design, axis=1)
    trials["design"] = "rate trial (" + trials["model"] + ")"
    cells = pd.concat([runs, trials], ignore_index=True)
    out = ["**CPU:** " + "; ".join(f"{n} cores, torch CPU capability {cap}, native bf16: {'yes' if bf16 else 'no'}, "
                                   f"training in {dtype}, evaluation in {evaluation}" for cap, bf16, dtype, n in sorted(cpus))
           + f". Read from the committed records in `{folder.relative_to(common.ROOT)}` by `bench/report.py`.", "",
           f"{len(cells)} cells ({len(trials)} learning-rate trials), wall "
           f"{export.wall_span_s(statuses) / 60:.1f} min (first start to last end within each of "
           f"{len(export.sittings(statuses))} sittings, summed), "
           f"sum of cell walls {cells['wall_s'].sum() / 60:.1f} min.", "",
           "| design | method | cells | sum of walls (min) | median wall (s) | median training (s) | "
           "median evaluation (s) |", "|---|---|---|---|---|---|---|"]
    def median(g, column) -> str:
        return f"{g[column].median():.0f}" if g[column].notna().any() else "-"

    order = {"main condition": 0, "reference": 1}
    for (d, m), g in sorted(cells.groupby(["design", "method"]), key=lambda kv: (order.get(kv[0][0], 2), kv[0])):
        out.append(f"| {d} | {m} | {len(g)} | {g['wall_s'].sum() / 60:.1f} | {median(g, 'wall_s')} | "
                   f"{median(g, 'train_wall_s')} | {median(g, 'eval_wall_s')} |")
    return out


def cpu_label(r: dict) -> str:
    """Which CPU (and capability) produced a result file."""
    m = r["machine"]
    if r.get("cpu_kind") is None:
        return (f"{m['cpu']}, {m['cores']} cores (earlier session; CPU capability not recorded, reported as "
                "native bf16), finished " + r["finished"])
    return (f"{m['cpu']}, {m['cores']} cores, torch CPU capability {m.get('torch_cpu_capability')}, "
            f"native bf16: {'yes' if m.get('native_bf16') else 'no'}, finished {r['finished']}")


def main():
    every = {name: common.load_all(name) for name, _, _ in SECTIONS}
    results = {name: common.load(name) for name, _, _ in SECTIONS}
    first = next((r for r in results.values() if r), None)
    lines = ["# Benchmarks", "",
             "Written by `bench/report.py` from `bench/results/*.json`; every figure below comes from the "
             "scripts in `bench/`, run on this machine. Timings on shared cores are noisy: comparisons "
             "alternate the two sides and quote medians.", ""]
    if first:
        m = first["machine"]
        lines += [f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
                  f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; torch {m['torch']}, Python {m['python']}. "
                  "Runs finished: " + ", ".join(f"{n} {r['finished']}" for n, r in results.items() if r) + ".", ""]
    lines += ["## Reproduce", "", COMMANDS, ""]
    notes = (common.ROOT / "bench" / "NOTES.md")
    pictures = figures(results)
    for name, title, render in SECTIONS:
        lines += [f"## {title}", ""]
        if not every[name]:
            lines += ["Not run yet."]
        for r in every[name]:
            lines += [f"**CPU:** {cpu_label(r)}.", ""] + render(r) + [""]
        if name in pictures:
            lines += ["", f"![{title}]({pictures[name]})"]
        lines.append("")
    lines += ["## 6. GPU check", ""] + gpu_section(common.load("gpu_check")) + [""]
    lines += ["## 10. The CPU study (`params/cpu-study.yaml`, `results/cpu-study`)", ""] + committed_study_section() + [""]
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    (common.ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
