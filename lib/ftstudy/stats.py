"""Uncertainty from the per-sample logs: paired differences, bootstrap CIs, McNemar, baselines.

Two runs of one model scored the same items, so their difference is best judged item by
item: a paired bootstrap interval of the mean difference, and for 0/1 metrics the exact
McNemar test (a binomial test on the discordant items). scipy does the statistics.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

N_RESAMPLES = 2000
LOWER_IS_BETTER = {"bits_per_byte", "nll"}


def load_samples(run_dir: str | Path, task: str) -> pd.DataFrame:
    """One row per (item, filter): doc_id, metric name as in results.csv, value, and for
    multiple-choice tasks the predicted and gold choice."""
    path = Path(run_dir) / "lm_eval" / task / "samples.jsonl"
    columns = ["doc_id", "metric", "value", "pred", "target", "n_choices"]
    if not path.is_file():  # a run made before the task was added: nothing to pair
        return pd.DataFrame(columns=columns)
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            filt = s.get("filter", "none")
            pred = None
            resps = s.get("filtered_resps")
            if resps and isinstance(resps[0], list) and len(resps) > 1:  # multiple choice
                pred = int(np.argmax([r[0] for r in resps]))
            for metric in s.get("metrics", []):
                if metric in s:
                    rows.append(dict(doc_id=s["doc_id"], metric=metric if filt == "none" else f"{metric}_{filt}",
                                     value=float(s[metric]), pred=pred, target=s.get("target"),
                                     n_choices=len(resps) if pred is not None else None))
    return pd.DataFrame(rows, columns=columns)


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str, seed: int = 0) -> dict:
    """Mean of (b - a) over shared items, its paired bootstrap 95% CI, and McNemar's p."""
    x = a[a["metric"] == metric].set_index("doc_id")["value"]
    y = b[b["metric"] == metric].set_index("doc_id")["value"]
    common = x.index.intersection(y.index)
    diff = (y.loc[common] - x.loc[common]).to_numpy()
    out = dict(n=len(diff), mean_diff=float(diff.mean()) if len(diff) else np.nan,
               ci_low=np.nan, ci_high=np.nan, p_mcnemar=np.nan)
    if len(diff) >= 2:
        if np.ptp(diff) == 0:
            out["ci_low"] = out["ci_high"] = float(diff[0])
        else:
            ci = sps.bootstrap((diff,), np.mean, n_resamples=N_RESAMPLES, method="percentile",
                               random_state=np.random.default_rng(seed)).confidence_interval
            out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    binary = set(np.unique(np.concatenate([x.to_numpy(), y.to_numpy()]))) <= {0.0, 1.0}
    if binary and len(diff):
        gained = int(((x.loc[common] == 0) & (y.loc[common] == 1)).sum())
        lost = int(((x.loc[common] == 1) & (y.loc[common] == 0)).sum())
        out["p_mcnemar"] = (float(sps.binomtest(min(gained, lost), gained + lost, 0.5).pvalue)
                            if gained + lost else 1.0)
        out.update(gained=gained, lost=lost)
    return out


def answer_distribution(samples: pd.DataFrame) -> dict:
    """For a multiple-choice task: chance, majority-answer baseline, and the model's answers."""
    mc = samples.dropna(subset=["pred"]).drop_duplicates("doc_id")
    if mc.empty:
        return {}
    n = len(mc)
    preds = Counter(int(p) for p in mc["pred"])
    golds = Counter(int(t) for t in mc["target"])
    top, top_n = preds.most_common(1)[0]
    return dict(n_items=n, chance=float(np.mean(1 / mc["n_choices"])),
                majority_baseline=golds.most_common(1)[0][1] / n,
                top_answer=top, top_answer_share=top_n / n,
                answer_shares={k: preds.get(k, 0) / n for k in range(int(mc["n_choices"].max()))})


def min_detectable_difference(n: int, p: float = 0.5, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference two independent runs on n items could detect (normal
    approximation): what a grid's item counts can and cannot tell."""
    if n <= 0:
        return float("nan")
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return float(z * np.sqrt(2 * p * (1 - p) / n))
