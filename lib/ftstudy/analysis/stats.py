"""Uncertainty of item-paired scores: paired differences, bootstrap CIs, McNemar, baselines.

Two runs of one model scored the same items, so their difference is best judged item by
item: a paired bootstrap interval of the mean difference, and for 0/1 metrics the exact
McNemar test (a binomial test on the discordant items). scipy does the statistics.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy import stats as sps

from ftstudy.analysis import measures

N_RESAMPLES = 2000
# Sign-flip resamples: a Monte Carlo p-value cannot go below 1/(B+1), and Holm multiplies the
# smallest p by the family size (60 comparisons in the default grid), so B must be large.
SIGN_FLIPS = 100_000
LOWER_IS_BETTER = measures.LOWER_IS_BETTER


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

    The test decides, not the interval (see `verdicts.decide`): for 0/1 metrics the exact
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
    n = len(diff)
    out = dict(n=n, mean_diff=float(diff.mean()) if n else np.nan, ci_low=np.nan, ci_high=np.nan,
               p_value=np.nan, test=None, se=float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan,
               df=n - 1, item_var=float(diff.var(ddof=1)) if n > 1 else np.nan)  # one seed: items only
    if len(diff) >= 2 and not _constant(diff):
        ci = sps.bootstrap((diff,), np.mean, n_resamples=N_RESAMPLES, method="percentile",
                           random_state=np.random.default_rng(seed)).confidence_interval
        out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    if test and len(diff):
        out.update(test="sign-flip", p_value=sign_flip_p(diff, seed))
    return out


def _mean_squares(d: np.ndarray) -> tuple[float, float, float]:
    """Two-way (seeds x items, one value per cell) mean squares: seeds, items, residual."""
    s, n = d.shape[-2:]
    g = d.mean(axis=(-2, -1), keepdims=True)
    gs, mi = d.mean(axis=-1, keepdims=True), d.mean(axis=-2, keepdims=True)
    ms_s = n * ((gs - g) ** 2).sum(axis=(-2, -1)) / (s - 1)
    ms_i = s * ((mi - g) ** 2).sum(axis=(-2, -1)) / (n - 1)
    ms_e = ((d - gs - mi + g) ** 2).sum(axis=(-2, -1)) / ((s - 1) * (n - 1))
    return ms_s, ms_i, ms_e


def satterthwaite(ms_s, ms_i, ms_e, s: int, n: int):
    """The variance of a seeds x items grand mean (times S n) and its degrees of freedom, from
    the three mean squares: MS_seeds + MS_items - MS_residual (seed, item and residual variance
    each counted once), with three guards for few seeds. The seed term is never dropped: at two
    or three seeds an estimate of no seed variance rests on one or two degrees of freedom. An
    item variance estimated below zero (on n - 1 of them) counts as zero. The sum is never
    below MS_residual, the residual's share, which the grand mean's variance always includes.
    Satterthwaite's degrees of freedom are bounded below by the seed term's own, S - 1: with a
    subtracted mean square they otherwise fall towards zero where the sum is small (a t quantile
    at df 1e-12 made an interval of +-300,000 from a standard error of 0.01)."""
    ms_s, ms_i, ms_e = (np.asarray(x, dtype=float) for x in (ms_s, ms_i, ms_e))
    items = (ms_i > ms_e).astype(float)
    dfs, dfi, dfe = max(s - 1, 1), max(n - 1, 1), max((s - 1) * (n - 1), 1)
    num = ms_s + items * (ms_i - ms_e)
    den = ms_s ** 2 / dfs + items * (ms_i ** 2 / dfi + ms_e ** 2 / dfe)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, num ** 2 / den, dfi)
    return np.maximum(num, ms_e), np.maximum(df, dfs)


def crossed_batch(d: np.ndarray):
    """`crossed`'s mean, standard error and Satterthwaite degrees of freedom for a batch of
    seeds x items arrays (shape reps x seeds x items), vectorised for simulation."""
    d = np.asarray(d, dtype=float)
    s, n = d.shape[-2:]
    num, df = satterthwaite(*_mean_squares(d), s, n)
    return d.mean(axis=(-2, -1)), np.sqrt(num / (s * n)), df


def crossed(diffs: list[np.ndarray]) -> dict:
    """Several seeds of one comparison on the same items (rows: seeds, columns: items in one
    order), training randomness and item sampling in one interval: the grand mean, its
    variance from the two-way mean squares (`satterthwaite`: seed, item and residual variance
    each counted once), a t interval and t test with Satterthwaite's degrees of freedom, and
    the three variance components (what the planner and the detectable change need). Its 95%
    interval covers at least 93% at three seeds (tests/test_power.py)."""
    d = np.vstack(diffs).astype(float)
    s, n = d.shape
    mean, se, df = (float(x) for x in crossed_batch(d))
    ms_s, ms_i, ms_e = (float(x) for x in _mean_squares(d))
    out = dict(n=n, mean_diff=mean, se=se, df=df, seed_var=max(0.0, (ms_s - ms_e) / n),
               item_var=max(0.0, (ms_i - ms_e) / s), resid_var=ms_e,
               test="t over seeds x items (Satterthwaite)")
    if se > 0:
        half = float(sps.t.ppf(0.975, df)) * se
        out.update(ci_low=mean - half, ci_high=mean + half, p_value=float(2 * sps.t.sf(abs(mean) / se, df)))
    else:  # every seed and item changed alike
        out.update(ci_low=np.nan, ci_high=np.nan, p_value=0.0 if mean != 0 else 1.0)
    return out


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


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (statsmodels)."""
    from statsmodels.stats.proportion import proportion_confint

    return proportion_confint(k, n, alpha=alpha, method="wilson")
