"""Evaluation tasks, one registry entry each: the only place a task is declared.

An entry holds what evaluation, data, planning and fingerprints need to know about a task, so
adding one is one entry here: an lm-eval task (`Benchmark`: its YAML is included as it is, only
the data source is ours) or one of our log-likelihood tasks (`LogLikelihood`: the reference
answers of some rows of a training set, `ftstudy.compute.nll`). Nothing else lists tasks; the
names other modules import (`evaluate.TASKS`, `evaluate.HEADLINE`, `data.HELDOUT_TASKS`, ...)
are read from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    """An lm-eval task, included from its upstream YAML so prompts, filters and metrics stay
    upstream's; a local copy of its data (the offline mirror) replaces the hub's when given.
    Its dataset is named after the task and declared here (`hub`, `mirror`)."""
    upstream: str                     # its YAML, relative to lm_eval/tasks
    headline: str                     # the metric results and verdicts read (lm-eval's name)
    hub: tuple[str, str | None]       # dataset id and config on the Hugging Face hub
    mirror: dict[str, str]            # split -> file in the offline mirror (`data.load_records` reads it)
    splits: dict[str, str | None]     # lm-eval's split keys -> mirror split (None: the mirror lacks it)
    generates: bool = False           # scored by generating text: seconds per item (calibration times fewer)


@dataclass(frozen=True)
class LogLikelihood:
    """Ours: a held-out reference answer's log-likelihood given its prompt, in the format the
    model is trained on (its chat template when it has one), in bits per byte (lower = better)."""
    train_set: str                    # the `data.TRAIN_SETS` set whose rows it scores
    part: str                         # which of its held-out rows: "test", or "validation" (these choose
    #                                   learning rates and are never a study result); see `data._rows`
    solution: bool = False            # GSM8K solutions: scored per token and split into working and
    #                                   annotation format (`ftstudy.compute.nll`)
    headline: str = "bits_per_byte"


REGISTRY: dict[str, Benchmark | LogLikelihood] = {
    "gsm8k": Benchmark(
        upstream="gsm8k/gsm8k.yaml", headline="exact_match_flexible-extract",
        hub=("openai/gsm8k", "main"),
        mirror={"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
        splits={"training_split": "train", "test_split": "test"}, generates=True),
    "hellaswag": Benchmark(
        upstream="hellaswag/hellaswag.yaml", headline="acc_norm",
        hub=("Rowan/hellaswag", None),
        mirror={"validation": "hellaswag/hellaswag_val_full.txt.bz2"},
        # the mirror has no HellaSwag train split
        splits={"training_split": None, "validation_split": "validation", "test_split": None}),
    "mmlu_high_school_computer_science": Benchmark(
        upstream="mmlu/default/mmlu_high_school_computer_science.yaml", headline="acc",
        hub=("cais/mmlu", "high_school_computer_science"),
        mirror={"test": "mmlu/high_school_computer_science_test.csv",
                "dev": "mmlu/high_school_computer_science_dev.csv",
                "validation": "mmlu/high_school_computer_science_val.csv"},
        splits={"test_split": "test", "fewshot_split": "dev"}),
    "gsm8k_nll": LogLikelihood(train_set="gsm8k_train", part="test", solution=True),
    "alpaca_nll": LogLikelihood(train_set="alpaca", part="test"),
    "gsm8k_val_nll": LogLikelihood(train_set="gsm8k_train", part="validation", solution=True),
    "alpaca_val_nll": LogLikelihood(train_set="alpaca", part="validation"),
}


def get(task: str) -> Benchmark | LogLikelihood:
    if task not in REGISTRY:
        raise KeyError(f"unknown task {task!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[task]


def is_nll(task: str) -> bool:
    return isinstance(get(task), LogLikelihood)


def is_solution(task: str) -> bool:
    entry = get(task)
    return isinstance(entry, LogLikelihood) and entry.solution


def generates(task: str) -> bool:
    entry = get(task)
    return isinstance(entry, Benchmark) and entry.generates


def benchmarks() -> list[str]:
    return [t for t, e in REGISTRY.items() if isinstance(e, Benchmark)]


def log_likelihood() -> list[str]:
    return [t for t, e in REGISTRY.items() if isinstance(e, LogLikelihood)]


def is_result(task: str) -> bool:
    """Whether a task's scores are study results: not a validation task, whose scores only
    choose learning rates."""
    entry = get(task)
    return not (isinstance(entry, LogLikelihood) and entry.part == "validation")
