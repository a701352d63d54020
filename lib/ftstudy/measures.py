"""What each metric measures, in one place: which metric carries a task's verdict, its unit,
how it is written, which way is better, and whether it is 0/1 per item; and the continuous
per-item scores of a multiple-choice item, computed from the per-choice log-likelihoods lm-eval
logs (no compute).

Accuracy on a handful of items is blind: a 12-item task can flip at most a few items. The
probability the model gives the correct choice, normalised over the choices, moves with every
item, so multiple-choice verdicts rest on it and accuracy stays beside it. The margin of the
correct choice over the best distractor shows what p(correct) also moves with (overall
confidence, a bias toward one letter).
"""
from __future__ import annotations

import numpy as np

from ftstudy.evaluate import SOLUTION_TASKS, headline_metric

LOWER_IS_BETTER = {"bits_per_byte", "nll", "math_bits_per_byte", "format_bits_per_byte", "format_nll"}
# A multiple-choice accuracy -> the continuous score in the same normalisation (lm-eval's `acc`
# compares summed log-likelihoods; `acc_norm` divides each by its choice's length in characters).
CONTINUOUS = {"acc": "p_correct", "acc_norm": "p_correct_norm"}
MARGINS = {"acc": "margin", "acc_norm": "margin_norm"}
# A GSM8K solution's log-likelihood without its annotation format (`ftstudy.nll`): the math
# target's verdict rests on it where the runs have it (runs scored before the split have not).
WITHOUT_FORMAT = {"bits_per_byte": "math_bits_per_byte"}
UNITS = {"bits_per_byte": "bits/byte", "nll": "nats", "math_bits_per_byte": "bits/byte of working",
         "format_bits_per_byte": "bits/byte of annotation format", "format_nll": "nats", "p_correct": "p(correct choice)",
         "p_correct_norm": "p(correct choice), length-normalised",
         "margin": "nats", "margin_norm": "nats (length-normalised)"}


def verdict_metric(task: str, metrics=()) -> str:
    """The metric whose paired change decides a task's verdict: the continuous score of a
    multiple-choice task's headline accuracy; for a GSM8K solution task the working without
    the annotation format when `metrics` (those the compared runs share) include it; else the
    headline metric itself."""
    m = headline_metric(task)
    if task in SOLUTION_TASKS and WITHOUT_FORMAT.get(m) in set(metrics):
        return WITHOUT_FORMAT[m]
    return CONTINUOUS.get(m, m)


def binary(metric: str) -> bool:
    """0/1 per item (an accuracy or exact match): McNemar's test, and a floor on what it can detect."""
    return metric.startswith(("acc", "exact_match"))


def bounded(metric: str) -> bool:
    """A score on the 0-1 scale (an accuracy or a probability): a change near that size says nothing."""
    return binary(metric) or metric.startswith("p_correct")


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def unit(metric: str) -> str:
    return UNITS.get(metric, "accuracy" if binary(metric) else metric)


def fmt(metric: str) -> str:
    """How a change of `metric` is written: accuracy to two places, the rest to three."""
    return "+.2f" if binary(metric) else "+.3f"


def choice_scores(sample: dict) -> dict:
    """The continuous scores of one multiple-choice item from its log line: per normalisation
    lm-eval computed (`acc`, and `acc_norm` where logged), the probability of the correct
    choice (a softmax of the choices' log-likelihoods; for `acc_norm` each divided by its
    choice's length in characters, as lm-eval's argmax does, and scaled back to the item's mean
    choice length, so that the softmax is not flattened to uniform by per-character units) and
    the margin of the correct choice over the best distractor in the same units. Its sign is
    lm-eval's accuracy. Empty for an item that is not multiple choice."""
    resps = sample.get("filtered_resps") or []
    if len(resps) < 2 or not all(isinstance(r, list) and r for r in resps):
        return {}
    ll = np.array([float(r[0]) for r in resps])
    gold = int(sample["target"])
    out = {}
    for acc in ("acc", "acc_norm"):
        if acc not in (sample.get("metrics") or []):
            continue
        score = ll
        if acc == "acc_norm":  # per character, scaled back to the item's mean choice length
            lengths = np.array([float(len(choice)) for choice in _choices(sample)])
            score = ll / lengths * lengths.mean()
        p = np.exp(score - score.max())
        out[CONTINUOUS[acc]] = float(p[gold] / p.sum())
        out[MARGINS[acc]] = float(score[gold] - np.delete(score, gold).max())
    return out


def _choices(sample: dict) -> list[str]:
    """Each choice's text as lm-eval's `acc_norm` measures it: the continuation of its request
    without the target delimiter (a space) that lm-eval puts before every choice."""
    conts = [a[1] for a in sample["arguments"]]
    return [c[1:] if all(x.startswith(" ") for x in conts) else c for c in conts]
