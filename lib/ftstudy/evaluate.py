"""Evaluation with lm-evaluation-harness, on the model already in memory.

Local task YAMLs `include` lm-eval's own task configs and override only where the data
comes from (and the shot count when params set one), so prompts, answer filters and
metrics stay upstream's and numbers stay comparable with published ones. The YAMLs are
written into the run folder: `python -m lm_eval --include_path <run>/tasks` reproduces.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ftstudy import data, paths

# Study task name -> (upstream YAML inside lm_eval/tasks, mirror overrides builder)
UPSTREAM = {  # (the NLL tasks below are ours, not upstream's)
    "gsm8k": "gsm8k/gsm8k.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "mmlu_high_school_computer_science": "mmlu/default/mmlu_high_school_computer_science.yaml",
}
# The splits lm-eval reads per task (the mirror has no HellaSwag train split).
MIRROR_SPLITS = {
    "gsm8k": dict(splits=["train", "test"], keys=dict(training_split="train", test_split="test")),
    "hellaswag": dict(splits=["validation"],
                      keys=dict(training_split=None, validation_split="validation", test_split=None)),
    "mmlu_high_school_computer_science": dict(splits=["test", "dev"],
                                              keys=dict(test_split="test", fewshot_split="dev")),
}
# Our own tasks: the reference answer's log-likelihood given the prompt, in the format the
# model is trained on (its chat template when it has one). Lower bits per byte = better.
NLL_TASKS = ("gsm8k_nll", "alpaca_nll")
PREFIX = "ftstudy_"
DEFAULTS = dict(batch_size=8, tasks={
    "gsm8k": {"limit": 4, "num_fewshot": 5},
    "hellaswag": {"limit": 32},
    "mmlu_high_school_computer_science": {"limit": 8, "num_fewshot": 5},
    "gsm8k_nll": {"limit": 32},
    "alpaca_nll": {"limit": 32},
})
TASKS = (*UPSTREAM, *NLL_TASKS)


def upstream_yaml(task: str) -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / UPSTREAM[task]


def nll_task_config(task: str, data_dir: Path | None, chat: bool) -> dict:
    """A held-out answer log-likelihood task (see `ftstudy.nll`)."""
    return {
        "task": PREFIX + task, "tag": ["ftstudy"], "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data.heldout_jsonl(task, data_dir))}},
        "test_split": "test", "output_type": "loglikelihood", "num_fewshot": 0,
        "doc_to_text": "prompt", "doc_to_target": "answer" if chat else "nl_answer",
        "metric_list": [{"metric": "bits_per_byte", "aggregation": "mean", "higher_is_better": False},
                        {"metric": "nll", "aggregation": "mean", "higher_is_better": False}],
        "metadata": {"version": 1.0, "chat_format": chat},
    }


def task_config(task: str, settings: dict, data_dir: Path | None, chat: bool = True) -> dict:
    """One local task: upstream config by include, plus data-source (and shot) overrides."""
    if task in NLL_TASKS:
        return nll_task_config(task, data_dir, chat)
    cfg = {"include": str(upstream_yaml(task)), "task": PREFIX + task, "tag": ["ftstudy"]}
    if data_dir is not None:
        spec = MIRROR_SPLITS[task]
        cfg.update(dataset_path="json", dataset_name=None, **spec["keys"])
        cfg["dataset_kwargs"] = {"data_files": {
            split: str(data.records_as_jsonl(task, split, data_dir)) for split in spec["splits"]}}
    if settings.get("num_fewshot") is not None:
        cfg["num_fewshot"] = int(settings["num_fewshot"])
    return cfg


def write_task_yamls(tasks: dict, out_dir: str | Path, data_dir=None, chat: bool = True) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = paths.data_dir(data_dir)
    for task, settings in tasks.items():
        text = yaml.safe_dump(task_config(task, settings or {}, data_dir, chat), sort_keys=False)
        if task in NLL_TASKS:
            text += "process_results: !function ftstudy.nll.process_results\n"
        (out_dir / f"{PREFIX}{task}.yaml").write_text(text)
    return out_dir


def resolve(evaluation: dict | None) -> dict:
    ev = {"batch_size": DEFAULTS["batch_size"], "tasks": dict(DEFAULTS["tasks"])}
    if evaluation:
        ev["batch_size"] = evaluation.get("batch_size", ev["batch_size"])
        if "tasks" in evaluation:
            ev["tasks"] = evaluation["tasks"]
    return ev


def evaluate(model, tokenizer, evaluation: dict, run_dir: str | Path, data_dir=None) -> dict:
    """Run every task on the in-memory model; keep lm-eval's results and per-sample logs.

    Returns {"tasks": {task: lm-eval's results for it}, "wall_s": seconds}. Each task runs
    with its own limit.
    """
    import time

    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    ev = resolve(evaluation)
    run_dir = Path(run_dir)
    chat = bool(getattr(tokenizer, "chat_template", None))
    task_dir = write_task_yamls(ev["tasks"], run_dir / "tasks", data_dir, chat)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    model.eval()
    merged = _merge_adapter_for_eval(model)
    try:
        out = _run_tasks(model, tokenizer, ev, run_dir, manager, chat)
    finally:
        if merged:
            model.unmerge_adapter()
    return {"tasks": out, "wall_s": time.perf_counter() - start}


def _merge_adapter_for_eval(model) -> bool:
    """Fold LoRA/DoRA weights into the base layers while evaluating (as deployed): an
    unmerged DoRA layer recomputes its weight norm on every forward, ~3x slower on CPU.
    4-bit bases are left unmerged (merging would dequantise them)."""
    import peft

    if not isinstance(model, peft.PeftModel) or model.peft_config[model.active_adapter].peft_type != peft.PeftType.LORA:
        return False
    if any("4bit" in type(m).__name__ for m in model.modules()):
        return False
    model.merge_adapter()
    return True


def _run_tasks(model, tokenizer, ev: dict, run_dir: Path, manager, chat: bool) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import handle_non_serializable

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=ev["batch_size"])
    out = {}
    for task, settings in ev["tasks"].items():
        name = PREFIX + task
        res = simple_evaluate(model=lm, tasks=[name], limit=(settings or {}).get("limit"),
                              task_manager=manager, log_samples=True,
                              apply_chat_template=chat and task in NLL_TASKS)
        samples = res.pop("samples")
        folder = run_dir / "lm_eval" / task
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(
            json.dumps(res, indent=2, default=handle_non_serializable, ensure_ascii=False))
        with open(folder / "samples.jsonl", "w", encoding="utf-8") as f:
            for s in samples[name]:
                f.write(json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n")
        out[task] = res["results"][name]
    return out


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
