"""Evaluation with lm-evaluation-harness, on the model already in memory.

Local task YAMLs `include` lm-eval's own task configs and override only where the data
comes from (and the shot count when params set one), so prompts, answer filters and
metrics stay upstream's and numbers stay comparable with published ones. The YAMLs are
written into the run folder: `python -m lm_eval --include_path <run>/tasks` reproduces.
Which tasks exist and what each reads is `ftstudy.compute.tasks`; defaults are
`ftstudy.compute.defaults`.
"""
from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path

import yaml

from ftstudy.compute import data, defaults, paths, precision, tasks as registry
from ftstudy.compute.memory import AnonPeak

# Names other stages read, derived from the task registry when this module is imported
# (code in this package asks `ftstudy.compute.tasks`, so a task registered later is seen too).
# Study task name -> lm-eval's YAML that its local task includes.
UPSTREAM = {t: registry.get(t).upstream for t in registry.benchmarks()}
# Our own tasks: the reference answer's log-likelihood given the prompt, in the format the
# model is trained on (its chat template when it has one). Lower bits per byte = better.
# The *_val_nll tasks score the validation rows that choose learning rates (ftstudy.planning.tuning).
NLL_TASKS = tuple(registry.log_likelihood())
# The NLL tasks that score GSM8K solutions, split into working and annotation format (`ftstudy.compute.nll`).
SOLUTION_TASKS = tuple(t for t in NLL_TASKS if registry.is_solution(t))
PREFIX = "ftstudy_"
TASKS = tuple(registry.REGISTRY)
# The headline metric of each task whose scores are study results (lm-eval's names, as in results.csv).
HEADLINE = {t: registry.get(t).headline for t in TASKS if registry.is_result(t)}


def headline_metric(task: str) -> str:
    """The metric a task's results and verdicts read (bits per byte for one no longer registered)."""
    entry = registry.REGISTRY.get(task)
    return entry.headline if entry is not None else "bits_per_byte"


def upstream_yaml(task: str) -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / registry.get(task).upstream


def nll_task_config(task: str, data_file: str | Path, chat: bool) -> dict:
    """A held-out answer log-likelihood task (see `ftstudy.compute.nll`) reading `data_file`."""
    metrics = ["bits_per_byte", "nll"]
    if registry.is_solution(task):
        metrics += ["math_bits_per_byte", "format_bits_per_byte", "format_nll"]
    return {
        "task": PREFIX + task, "tag": ["ftstudy"], "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test", "output_type": "loglikelihood", "num_fewshot": 0,
        "doc_to_text": "prompt", "doc_to_target": "answer" if chat else "nl_answer",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": False} for m in metrics],
        "metadata": {"version": 1.0, "chat_format": chat},
    }


def task_config(task: str, settings: dict, data_dir: Path | None, chat: bool = True) -> dict:
    """One local task: upstream config by include, plus data-source (and shot) overrides."""
    if registry.is_nll(task):
        return nll_task_config(task, data.heldout_jsonl(task, data_dir), chat)
    entry = registry.get(task)
    cfg = {"include": str(upstream_yaml(task)), "task": PREFIX + task, "tag": ["ftstudy"]}
    if data_dir is not None:
        cfg.update(dataset_path="json", dataset_name=None, **entry.splits)
        cfg["dataset_kwargs"] = {"data_files": {
            split: str(data.records_as_jsonl(task, split, data_dir)) for split in entry.splits.values() if split}}
    if settings.get("num_fewshot") is not None:
        cfg["num_fewshot"] = int(settings["num_fewshot"])
    return cfg


def write_task_yamls(tasks: dict, out_dir: str | Path, data_dir=None, chat: bool = True) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = paths.data_dir(data_dir)
    for task, settings in tasks.items():
        text = yaml.safe_dump(task_config(task, settings or {}, data_dir, chat), sort_keys=False)
        if registry.is_nll(task):
            function = "process_solution_results" if registry.is_solution(task) else "process_results"
            text += f"process_results: !function ftstudy.compute.nll.{function}\n"
        (out_dir / f"{PREFIX}{task}.yaml").write_text(text)
    return out_dir


def resolve(evaluation: dict | None) -> dict:
    """Evaluation settings with every unset key from `defaults.EVALUATION` (`dtype` as given:
    `auto` stays `auto` in a cell, so its run id is the same on every machine)."""
    ev = defaults.evaluation()
    for key in ("batch_size", "dtype", "sample_seed", "tasks"):
        if evaluation and evaluation.get(key) is not None:
            ev[key] = evaluation[key]
    return ev


def eval_dtype(evaluation: dict | None) -> str:
    """The precision evaluation computes in on this machine: `evaluation.dtype`, `auto` resolved
    (bf16 where native, else fp32; `ftstudy.compute.precision`). Each run records it."""
    return precision.resolve_dtype(resolve(evaluation)["dtype"])


def sample_doc_ids(n_docs: int, limit: int | None, task: str, seed: int) -> list[int] | None:
    """A seeded random sample of `limit` item indices (None: every item). Seeded by the
    grid's `sample_seed` and the task name only, so every run of a grid scores the same
    items; the first N would be biased (HellaSwag's first 3,243 items are all ActivityNet)."""
    import numpy as np

    if limit is None or limit >= n_docs:
        return None
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    return sorted(int(i) for i in rng.choice(n_docs, size=limit, replace=False))


def prepare_for_eval(model) -> bool:
    """Put a model's weights in fp32, as every run and its reference are evaluated; True if a
    LoRA/DoRA adapter was merged.

    Nothing is rounded here: a bf16 evaluation (`evaluation.dtype`) autocasts each matmul to bf16
    over these fp32 weights, as training does, and never stores a weight in bf16. A LoRA/DoRA
    adapter on an unquantised base is merged, exact to fp32 rounding (unmerged DoRA recomputes its
    weight norm every forward, ~3x slower on CPU); under bf16 autocast a merged update is then
    rounded with its weight at each matmul, as full fine-tuning's is, while QLoRA's unmerged
    adapter and IA3's scaling vectors act on bf16 activations (BENCHMARKS.md section 15 measures
    what bf16 moves). A 4-bit base is scored through `dequantised_4bit`.
    """
    import peft
    import torch

    quantised = any("4bit" in type(m).__name__ for m in model.modules())
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
    is_lora = (isinstance(model, peft.PeftModel)
               and model.peft_config[model.active_adapter].peft_type == peft.PeftType.LORA)
    if is_lora and not quantised:
        model.merge_adapter()
        return True
    return False


@contextlib.contextmanager
def dequantised_4bit(model):
    """For the duration, every bitsandbytes 4-bit linear layer is replaced by a plain linear
    layer whose weight is its 4-bit weight dequantised once, by bitsandbytes' own
    dequantisation, into fp32, as every other model's weights are. This is the reference forward
    of a 4-bit model: the exact quantised weights, scored in the evaluation precision of every
    other run, at unquantised speed, on every CPU kind (bitsandbytes' own eval-mode CPU forward
    repacks the weights and computes in bf16 where AVX512-BF16 is native). QLoRA's adapter stays beside
    its base layer. Yields the bytes of the dequantised weights; the 4-bit layers come back after."""
    swapped = []
    if any(type(m).__name__ == "Linear4bit" for m in model.modules()):
        import bitsandbytes as bnb
        import torch

        target = torch.float32
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if not isinstance(child, bnb.nn.Linear4bit):
                    continue
                state = child.weight.quant_state
                if getattr(state, "packing_format_for_cpu", False):
                    raise RuntimeError(f"{name}: its 4-bit weight was repacked for bitsandbytes' bf16 CPU "
                                       "kernel by an eval-mode forward; dequantise before any")
                plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                        device=child.weight.device, dtype=target)
                with torch.no_grad():
                    plain.weight.copy_(bnb.functional.dequantize_4bit(child.weight.data, state).to(target))
                    if child.bias is not None:
                        plain.bias.copy_(child.bias.to(target))
                plain.requires_grad_(False)
                setattr(parent, name, plain)
                swapped.append((parent, name, child))
    try:
        yield sum(getattr(parent, name).weight.nbytes for parent, name, _ in swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def evaluate(model, tokenizer, evaluation: dict, run_dir: str | Path, data_dir=None) -> dict:
    """Run every task on the in-memory model; keep lm-eval's results and per-sample logs.

    The model's weights are put in fp32 (`prepare_for_eval`), a 4-bit model's dequantised into
    fp32 (`dequantised_4bit`), and scored in `evaluation.dtype`: fp32, or bf16 autocast over
    them; the same for a run and its reference. Returns {"tasks": {task: lm-eval's results}, "items": {task:
    doc ids scored, None = all}, "dtype": ..., "scoring": {task: requests per scoring path},
    "wall_s": seconds, "peak_anon_mb": the process's peak anonymous memory while evaluating,
    "added_anon_mb": that peak above its value when evaluation began, "dequantised_mb": the 4-bit
    weights dequantised for it}.
    """
    import time

    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    ev = dict(resolve(evaluation), dtype=eval_dtype(evaluation))
    run_dir = Path(run_dir)
    chat = bool(getattr(tokenizer, "chat_template", None))
    task_dir = write_task_yamls(ev["tasks"], run_dir / "tasks", data_dir, chat)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    model.eval()
    merged = prepare_for_eval(model)
    try:  # memory apart from training's: a 4-bit model's dequantised weights are evaluation's cost
        with AnonPeak() as memory, dequantised_4bit(model) as dequantised:
            out, items, paths = run_tasks(model, tokenizer, ev, run_dir, manager, chat)
    finally:
        if merged:
            model.unmerge_adapter()
    return {"tasks": out, "items": items, "dtype": ev["dtype"], "scoring": paths, "wall_s": time.perf_counter() - start,
            "peak_anon_mb": memory.peak_mb, "added_anon_mb": memory.peak_mb - memory.start_mb,
            "dequantised_mb": dequantised / 2 ** 20}


def count_docs(task: str, manager) -> int:
    """How many items a local task has (lm-eval builds it, reading its data once)."""
    return len(manager.load([PREFIX + task])["tasks"][PREFIX + task].eval_docs)


def run_tasks(model, tokenizer, ev: dict, out_dir: Path, manager, chat: bool,
              progress_dir: Path | None = None, label: str = "evaluating"):
    """Score each task of a resolved evaluation `ev` on the model as it is; keep lm-eval's
    results and per-sample logs under `out_dir/lm_eval/<task>/`. Returns (results, items, how many
    requests of each task ran a shared context once or took lm-eval's stock path)."""
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    from ftstudy.compute import progress
    from ftstudy.compute.scoring import TokenScoringHFLM

    # Shared contexts only in fp32, where they equal lm-eval's path within 1e-4 nats per item: in
    # bf16 the two paths round differently (up to ~0.9 nats on a HellaSwag choice, BENCHMARKS.md
    # section 14b), and prompt tuning always takes lm-eval's path, so in bf16 every run and its
    # reference take it. A rerun of a record scored before them (`ftstudy verify`) sets
    # FTSTUDY_SHARE_CONTEXTS=0.
    share = ev["dtype"] == "float32" and os.environ.get("FTSTUDY_SHARE_CONTEXTS", "1") != "0"
    # bf16: lm-eval's own autocast of the forward over fp32 weights; the log_softmax in fp32 (the
    # logits come from bf16 matmuls, but a bf16 log_softmax would round each to ~0.03 nats more)
    lm = TokenScoringHFLM(pretrained=model, tokenizer=tokenizer, batch_size=ev["batch_size"], share_contexts=share,
                          softmax_dtype="float32", mixed_precision_dtype=None if ev["dtype"] == "float32" else ev["dtype"],
                          token_tasks=[PREFIX + t for t in registry.log_likelihood()
                                       if registry.is_solution(t)])
    out, items, scored, paths = {}, {}, {}, {}
    for k, (task, settings) in enumerate(ev["tasks"].items()):
        name = PREFIX + task
        progress.report(progress_dir or out_dir, f"{label} {task}, task", k + 1, len(ev["tasks"]))
        limit = (settings or {}).get("limit")
        built = manager.load([name])["tasks"][name]  # built once: its items counted, then scored
        ids = sample_doc_ids(len(built.eval_docs), limit, task, ev["sample_seed"]) if limit else None
        items[task] = ids
        res = simple_evaluate(model=lm, tasks=[built], samples={name: ids} if ids else None,
                              task_manager=manager, log_samples=True,
                              apply_chat_template=chat and registry.is_nll(task))
        res["doc_ids"] = ids
        # which requests ran their shared context once, which took lm-eval's stock path
        res["scoring"] = paths[task] = {k: v - scored.get(k, 0) for k, v in lm.scored.items()}
        scored = dict(lm.scored)
        samples = res.pop("samples")
        folder = out_dir / "lm_eval" / task
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(
            json.dumps(res, indent=2, default=handle_non_serializable, ensure_ascii=False))
        with open(folder / "samples.jsonl", "w", encoding="utf-8") as f:
            for s in samples[name]:
                f.write(json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n")
        out[task] = res["results"][name]
    return out, items, paths


def metric_rows(task_results: dict) -> list[dict]:
    """lm-eval's `{metric,filter: value, metric_stderr,filter: se}` -> tidy rows."""
    rows = []
    for task, res in task_results.items():
        for key, value in res.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            se = res.get(f"{metric}_stderr,{filt}")
            rows.append(dict(task=task, metric=metric if filt == "none" else f"{metric}_{filt}",
                             value=float(value),
                             stderr=float(se) if isinstance(se, (int, float)) else None))
    return rows
