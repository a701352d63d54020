"""Uncertainty from the per-sample logs: paired differences, bootstrap CIs, McNemar, baselines.

Two runs of one model scored the same items, so their difference is best judged item by
item: a paired bootstrap interval of the mean difference, and for 0/1 metrics the exact
McNemar test (a binomial test on the discordant items). scipy does the statistics.
"""
from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

N_RESAMPLES = 2000
# Sign-flip resamples: a Monte Carlo p-value cannot go below 1/(B+1), and Holm multiplies the
# smallest p by the family size (60 comparisons in the default grid), so B must be large.
SIGN_FLIPS = 100_000
LOWER_IS_BETTER = {"bits_per_byte", "nll"}


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
        for metric in s.get("metrics", []):
            if metric in s:
                rows.append(dict(doc_id=s["doc_id"], metric=metric if filt == "none" else f"{metric}_{filt}",
                                 value=float(s[metric]), pred=pred, target=s.get("target"),
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


def item_differences(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(doc ids, a's values, b's values) of `metric` on the items both runs scored, by doc id."""
    x = a[a["metric"] == metric].set_index("doc_id")["value"]
    y = b[b["metric"] == metric].set_index("doc_id")["value"]
    common = np.sort(x.index.intersection(y.index).to_numpy())
    return common, x.loc[common].to_numpy(dtype=float), y.loc[common].to_numpy(dtype=float)


def is_binary(*arrays: np.ndarray) -> bool:
    return set(np.unique(np.concatenate(arrays))) <= {0.0, 1.0}


def _constant(values: np.ndarray) -> bool:
    """Every difference the same (to float rounding): a bootstrap would give a point."""
    return bool(np.ptp(values) <= 1e-9 * max(1.0, float(np.abs(values).max())))


def sign_flip_p(diff: np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value that the mean paired difference is zero: a sign-flip permutation
    test, exact when 2^n <= SIGN_FLIPS, else Monte Carlo with the +1 correction, so the
    verdict tests the same mean the sentence reports. Written as one matrix product:
    scipy's generic `permutation_test` gives the same p but took most of the report's time
    (its one-sample "samples" path permutes each pair in Python batches)."""
    diff = np.asarray(diff, dtype=float)
    n = len(diff)
    if not np.any(diff != 0):
        return 1.0
    if 2 ** n <= SIGN_FLIPS:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        extra = 0
    else:
        signs = np.random.default_rng(seed).integers(0, 2, size=(SIGN_FLIPS, n), dtype=np.int8) * 2.0 - 1.0
        extra = 1
    null = np.abs(signs @ diff) / n
    observed = abs(diff.mean())
    hits = int((null >= observed * (1 - 1e-12)).sum())  # ties (to rounding) count as extreme
    return float(min(1.0, (hits + extra) / (len(signs) + extra)))


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str, seed: int = 0) -> dict:
    """Mean of (b - a) over shared items, its paired bootstrap 95% CI, and a paired test.

    The test decides "outside the noise", not the interval: for 0/1 metrics the exact
    McNemar test (binomial on the discordant items: 3 of 4 gained is p = 0.25, although a
    percentile bootstrap excludes zero), else a sign-flip permutation test of the mean.
    When every item changed by the same amount there is no interval (a bootstrap of a
    constant is a point, not an uncertainty).
    """
    _, x, y = item_differences(a, b, metric)
    diff = y - x
    if not len(diff) or not is_binary(x, y):
        return mean_difference(diff, seed)
    out = mean_difference(diff, seed, test=False)
    gained = int(((x == 0) & (y == 1)).sum())
    lost = int(((x == 1) & (y == 0)).sum())
    out.update(gained=gained, lost=lost, test="mcnemar",
               p_value=float(sps.binomtest(min(gained, lost), gained + lost, 0.5).pvalue)
               if gained + lost else 1.0)
    return out


def mean_difference(diff: np.ndarray, seed: int = 0, test: bool = True) -> dict:
    """Mean of per-item differences, its percentile bootstrap 95% CI (none when every item
    changed alike) and, with `test`, a sign-flip permutation p-value of the mean."""
    diff = np.asarray(diff, dtype=float)
    out = dict(n=len(diff), mean_diff=float(diff.mean()) if len(diff) else np.nan,
               ci_low=np.nan, ci_high=np.nan, p_value=np.nan, test=None)
    if len(diff) >= 2 and not _constant(diff):
        ci = sps.bootstrap((diff,), np.mean, n_resamples=N_RESAMPLES, method="percentile",
                           random_state=np.random.default_rng(seed)).confidence_interval
        out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    if test and len(diff):
        out.update(test="sign-flip", p_value=sign_flip_p(diff, seed))
    return out


def seeds_then_items(diffs: list[np.ndarray], seed: int = 0) -> dict:
    """Several seeds of one configuration, scored on the same items (rows: seeds, columns:
    items in the same order): the mean over seeds of each seed's mean difference; a 95%
    interval from a bootstrap that resamples seeds, then items, one item draw shared by all
    seeds of a replicate (the items are the same, not new ones per seed); and a sign-flip
    permutation p-value on the per-item means over seeds (the items are the unit of test)."""
    rng = np.random.default_rng(seed)
    d = np.vstack(diffs)
    k, n = d.shape
    rows, cols = rng.integers(0, k, (N_RESAMPLES, k)), rng.integers(0, n, (N_RESAMPLES, n))
    boots = d[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    low, high = np.percentile(boots, [2.5, 97.5])
    item_means = d.mean(axis=0)
    out = dict(mean_diff=float(d.mean()), ci_low=float(low), ci_high=float(high),
               p_value=sign_flip_p(item_means, seed), test="sign-flip over item means of seeds")
    if _constant(d):
        out["ci_low"] = out["ci_high"] = np.nan
    return out


def training_noise(per_seed: list[list[float]], seeds_used: int) -> tuple[float, float]:
    """How far a difference between two sides, each the mean of `seeds_used` seed(s), can move
    from training randomness alone (adapter initialisation, data order), from each side's
    per-seed values (on the same items, so item sampling cancels): returns (the pooled
    between-seed standard deviation, the half-width of a 95% t prediction interval for the
    difference, assuming that spread on both sides). NaN when no side has two seeds to
    estimate from, or when every side's seeds were all used (the comparison's own interval,
    over seeds then items, already covers them)."""
    sides = [np.asarray(v, dtype=float) for v in per_seed]
    sides = [v[~np.isnan(v)] for v in sides]
    dof = sum(len(v) - 1 for v in sides if len(v) > 1)
    if dof < 1 or seeds_used < 1 or seeds_used >= max(len(v) for v in sides):
        return np.nan, np.nan
    sd = float(np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in sides if len(v) > 1) / dof))
    return sd, float(sps.t.ppf(0.975, dof) * sd * np.sqrt(2 / seeds_used))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (what statsmodels' `multipletests(method="holm")`
    returns; tests check they agree). Written out because that function calls
    `gc.collect()` on every family, which took seconds per report."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    out = np.empty_like(p)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust(df: pd.DataFrame, family: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Holm's correction of `p_value` within each family of comparisons; `significant` is
    the adjusted verdict at `alpha`."""
    out = df.copy()
    out["p_adjusted"] = np.nan
    if out.empty:
        out["significant"] = False
        return out
    for _, g in out[out["p_value"].notna()].groupby(family, dropna=False):
        out.loc[g.index, "p_adjusted"] = holm(g["p_value"].to_numpy())
    out["significant"] = out["p_adjusted"] < alpha
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


def min_paired_detectable(n: int, alpha: float = 0.05) -> float:
    """The smallest accuracy change a paired sign(-flip) test on n items can call significant
    at all: k/n, k the fewest changed items, all one way, with 2 * 0.5**k <= alpha (6 at 5%).
    A bootstrap interval over a few changed items is narrower than any test could resolve."""
    return math.ceil(math.log2(2 / alpha)) / n if n > 0 else float("nan")


def min_detectable_difference(n: int, p: float = 0.5, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference two independent runs on n items could detect (normal
    approximation): what a grid's item counts can and cannot tell."""
    if n <= 0:
        return float("nan")
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return float(z * np.sqrt(2 * p * (1 - p) / n))
