"""The smallest change each comparison would detect (80% power, two-sided 5%), training
randomness included: what a verdict of "no change" can claim, and what the planner aims at."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ftstudy.analysis import measures, stats

# Two-sided 5% test with 80% power: the smallest true difference a paired test detects is
# about (1.96 + 0.84) standard errors of the mean difference.
MDE_FACTOR = 1.959964 + 0.841621  # the normal quantiles at 97.5% and 80%


def _total_se(rows: pd.DataFrame, keys: list[str], borrow: bool = False) -> pd.DataFrame:
    """Each comparison's standard error with training randomness in it, and the factor from a
    standard error to the change detected with 80% power at a two-sided 5% level. Several
    seeds: its own (`stats.crossed`, t quantiles at its degrees of freedom). One seed: its item
    standard error plus the seed variance measured on the same task and metric by the
    comparisons that had seeds, or (`borrow`) the row's own `seed_var` as filled in by the
    caller (`training_randomness` says which)."""
    from scipy import stats as sps

    out = rows.copy()
    se = out["se"] if "se" in out else pd.Series(np.nan, index=out.index)
    out["se"] = se.fillna((out["ci_high"] - out["ci_low"]) / (2 * 1.96))  # tables built before `se`
    seeded = out["seeds"].fillna(1) >= 2
    seed_var = out["seed_var"] if "seed_var" in out else pd.Series(np.nan, index=out.index)
    pooled = seed_var[seeded].groupby([out.loc[seeded, k] for k in keys]).median() if seeded.any() else None
    borrowed = [r["seed_var"] if borrow else pooled.get(tuple(r[k] for k in keys), np.nan)
                if borrow or pooled is not None else np.nan for _, r in out.iterrows()]
    out["training_randomness"] = np.where(seeded, "measured", np.where(pd.notna(borrowed), "from seeded comparisons",
                                                                       "not included"))
    out.loc[~seeded, "se"] = np.sqrt(out.loc[~seeded, "se"] ** 2 + np.nan_to_num(np.array(borrowed)[~seeded.to_numpy()]))
    df = (out["df"] if "df" in out else pd.Series(np.nan, index=out.index)).where(seeded, np.inf).fillna(np.inf)
    out["power_factor"] = sps.t.ppf(0.975, df) + sps.t.ppf(0.8, df)
    return out


def detectable(aggregated: pd.DataFrame, contrasts: pd.DataFrame | None = None) -> pd.DataFrame:
    """The smallest change a verdict would likely call separated (80% power, two-sided 5%),
    training randomness included (`_total_se`): per configuration and task against the
    reference (`comparison` "vs base"; `mde` the median over methods, `mde_max` the least
    sensitive method: what "no method lost" can claim), and per factor's change of the gap
    between two methods (`comparison` "method x <factor>"). Before Holm's correction, which
    needs larger changes. For an accuracy, bounded below as explained inline."""
    if aggregated.empty:
        return pd.DataFrame()
    vs = aggregated[(aggregated["comparison"] == "vs base") & aggregated["headline"].astype(bool)].copy()
    vs = _total_se(vs, ["task", "metric"])
    # Accuracy: a method no item of which changed has no interval, which says nothing of its
    # sensitivity: it counts with the difference two independent runs at p = 0.5 could detect
    # on n items (conservative for paired items); one with a few changed items has a narrow
    # interval, but no paired test on n items (each the mean of S seeds) detects less than
    # `min_paired_detectable(n) / S`; and no accuracy changes by more than the whole scale.
    acc = vs["metric"].map(measures.binary).astype(bool)
    unmeasured = acc & vs["se"].isna()
    vs.loc[unmeasured, "se"] = [stats.min_detectable_difference(int(n)) / MDE_FACTOR for n in vs.loc[unmeasured, "n"]]
    floor = [stats.min_paired_detectable(int(n)) / max(int(s), 1) / MDE_FACTOR
             for n, s in zip(vs.loc[acc, "n"], vs.loc[acc, "seeds"].fillna(1))]
    vs.loc[acc, "se"] = np.maximum(vs.loc[acc, "se"].to_numpy(dtype=float), floor)
    vs["mde_one"] = vs["power_factor"] * vs["se"]
    keys = ["model", "train_data", "train_size", "task", "metric"]
    out = vs.groupby(keys, dropna=False).agg(
        n=("n", "max"), seeds=("seeds", "max"), se=("se", "median"), mde=("mde_one", "median"),
        mde_max=("mde_one", "max"), training_randomness=("training_randomness", lambda x: ", ".join(sorted(set(x)))))
    binary = out.index.get_level_values("metric").map(measures.binary).to_numpy(dtype=bool)
    for col in ("mde", "mde_max"):
        out[col] = np.where(binary, np.minimum(out[col], 1.0), out[col])
    out = out.reset_index().assign(comparison="vs base")
    if contrasts is not None and not contrasts.empty and "se" in contrasts:
        k = contrasts[contrasts["factor"].astype(str).str.startswith("method x ")].copy()
        if len(k):  # a single-seed gap of four runs borrows four times a seeded method's seed variance
            seeded = vs[vs["seeds"].fillna(1) >= 2]
            if "seed_var" in seeded and seeded["seed_var"].notna().any():
                pooled = seeded.groupby(["task", "metric"])["seed_var"].median()
                k["seed_var"] = [4 * pooled.get((t, m), np.nan) for t, m in zip(k["task"], k["metric"])]
            k = _total_se(k.assign(seeds=k["seeds"].where(k["seeds"] >= 2, 1)), ["task", "metric"], borrow=True)
            k["mde"] = k["mde_max"] = k["power_factor"] * k["se"]
            k["comparison"] = k["factor"]
            out = pd.concat([out, k[["comparison", "method", "model", "train_data", "train_size", "from", "to",
                                     "task", "metric", "n", "seeds", "se", "mde", "mde_max",
                                     "training_randomness"]]], ignore_index=True)
    return out
