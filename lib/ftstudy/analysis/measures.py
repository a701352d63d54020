"""What each metric measures, in one place: which metric carries a task's verdict, its unit,
how it is written, which way is better, and whether it is 0/1 per item. (The continuous
per-item scores themselves are read from the logs by `ftstudy.record.samples`.)

Accuracy on a handful of items is blind: a 12-item task can flip at most a few items. The
probability the model gives the correct choice, normalised over the choices, moves with every
item, so multiple-choice verdicts rest on it and accuracy stays beside it. The margin of the
correct choice over the best distractor shows what p(correct) also moves with (overall
confidence, a bias toward one letter).
"""
from __future__ import annotations

from ftstudy.compute.evaluate import SOLUTION_TASKS, headline_metric
from ftstudy.record import samples

LOWER_IS_BETTER = {"bits_per_byte", "nll", "math_bits_per_byte", "format_bits_per_byte", "format_nll"}
# A multiple-choice accuracy -> the continuous score in the same normalisation (lm-eval's `acc`
# compares summed log-likelihoods; `acc_norm` divides each by its choice's length in characters).
CONTINUOUS, MARGINS = samples.CONTINUOUS, samples.MARGINS
# A GSM8K solution's log-likelihood without its annotation format (`ftstudy.compute.nll`): the math
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
