"""Reading a run's per-sample logs (lm-eval's `samples.jsonl`, gzipped in exported results):
per-item metric rows, per-choice log-likelihoods, the continuous scores of a multiple-choice
item, and the per-item values of a curve point. Reading only: the statistics are in
`ftstudy.analysis.stats`.

Accuracy on a handful of items is blind: a 12-item task can flip at most a few items. The
probability the model gives the correct choice, normalised over the choices, moves with every
item; the margin of the correct choice over the best distractor shows what p(correct) also
moves with (overall confidence, a bias toward one letter).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ftstudy.compute import curves

# A multiple-choice accuracy -> the continuous score in the same normalisation (lm-eval's `acc`
# compares summed log-likelihoods; `acc_norm` divides each by its choice's length in characters).
CONTINUOUS = {"acc": "p_correct", "acc_norm": "p_correct_norm"}
MARGINS = {"acc": "margin", "acc_norm": "margin_norm"}


def sample_lines(run_dir: str | Path, task: str):
    """The per-sample log lines lm-eval wrote for a task (`samples.jsonl`, or gzipped as in
    exported results); nothing when the run has none."""
    folder = Path(run_dir) / "lm_eval" / task
    if (folder / "samples.jsonl").is_file():
        with open(folder / "samples.jsonl", encoding="utf-8") as f:
            yield from f
    elif (folder / "samples.jsonl.gz").is_file():
        with gzip.open(folder / "samples.jsonl.gz", "rt", encoding="utf-8") as f:
            yield from f


def load_samples(run_dir: str | Path, task: str) -> pd.DataFrame:
    """One row per (item, filter): doc_id, metric name as in results.csv, value, and for
    multiple-choice tasks the predicted and gold choice (empty for a run made before the
    task was added: nothing to pair)."""
    columns = ["doc_id", "metric", "value", "pred", "target", "n_choices"]
    rows = []
    for line in sample_lines(run_dir, task):
        s = json.loads(line)
        filt = s.get("filter", "none")
        pred = None
        resps = s.get("filtered_resps")
        if resps and isinstance(resps[0], list) and len(resps) > 1:  # multiple choice
            pred = int(np.argmax([r[0] for r in resps]))
        values = {m: float(s[m]) for m in s.get("metrics", []) if m in s}
        if pred is not None and filt == "none":  # continuous scores from the per-choice log-likelihoods
            values.update(choice_scores(s))
        for metric, value in values.items():
            rows.append(dict(doc_id=s["doc_id"], metric=metric if filt == "none" else f"{metric}_{filt}",
                             value=value, pred=pred, target=s.get("target"),
                             n_choices=len(resps) if pred is not None else None))
    return pd.DataFrame(rows, columns=columns)


def item_logliks(run_dir: str | Path, task: str) -> pd.Series:
    """Per-item log-likelihoods a run scored on a log-likelihood task, indexed by (doc_id,
    choice): each choice of a multiple-choice item, or the one reference answer. Empty for
    generation tasks. Controls compare these, not the rounded metrics."""
    values: dict = {}
    for line in sample_lines(run_dir, task):
        s = json.loads(line)
        for k, r in enumerate(s.get("filtered_resps") or []):
            if isinstance(r, list) and r and isinstance(r[0], (int, float)):
                values[(s["doc_id"], k)] = float(r[0])
    index = pd.MultiIndex.from_tuples(list(values), names=["doc_id", "choice"]) if values else None
    return pd.Series(list(values.values()), index=index, dtype=float)


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


def curve_points(run_dir: str | Path) -> list[dict]:
    """The recorded points of a run's curve ([] without one). The last step's point is read
    from the run's final evaluation (`metrics.json`, samples in the run folder), marked
    `final`; curves recorded before that scored it in training and keep their own."""
    run_dir = Path(run_dir)
    f = run_dir / "curve.json"
    if not f.is_file():
        return []
    curve = json.loads(f.read_text())
    pts = curve["points"]
    last = curve.get("final_step")
    metrics = run_dir / "metrics.json"
    if last and not any(p["step"] == last for p in pts) and metrics.is_file():
        final = json.loads(metrics.read_text())
        tasks = {m["task"] for p in pts for m in p["metrics"]}
        pts = pts + [{"step": last, "final": True, "items": final.get("eval_items"),
                      "metrics": [m for m in final["metrics"] if m["task"] in tasks]}]
    return pts


def curve_item_values(run_dir: str | Path, step: int, task: str, metric: str = "bits_per_byte"):
    """Per-item values of one curve point: a Series indexed by doc id."""
    final = any(p["step"] == step and p.get("final") for p in curve_points(run_dir))
    s = load_samples(Path(run_dir) if final else curves.step_folder(run_dir, step), task)
    s = s[s["metric"] == metric]
    return s.set_index("doc_id")["value"].astype(float).sort_index()
