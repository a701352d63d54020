"""One rule for every verdict the book states, and the table of them.

Every comparison the study makes (a method against its reference, two methods, a factor's
change, forgetting at matched learning) is decided here, once, by `decide`: the front page,
the results page, the figures' filled markers, the README and the limitations read the
verdict from `table` and never decide again. A sentence that states a verdict links to its
row (`Citations.verdict`), and a test checks that the book's wording and the table agree.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ftstudy.compute.methods import REFERENCES

SEPARATED = "separated"
SINGLE_SEED = "single seed"
NOT_AFTER_HOLM = "not significant after Holm"
INSIDE = "inside the noise"
CANNOT_TELL = "cannot be told"
NOT_TESTED = "not tested"
VERDICTS = (SEPARATED, SINGLE_SEED, NOT_AFTER_HOLM, INSIDE, CANNOT_TELL, NOT_TESTED)

# The words a sentence may use to state each verdict (the linked text; a lead sentence may
# answer "yes" / "not detectably"). Any of these outside a verdict link is a verdict stated
# without its row (see `VOCABULARY`).
PHRASES = {
    SEPARATED: ("separated", "yes"),
    SINGLE_SEED: ("single seed",),
    NOT_AFTER_HOLM: ("not significant after holm's correction", "not detectably"),
    INSIDE: ("inside the noise", "not detectably"),
    CANNOT_TELL: ("cannot be told",),
    NOT_TESTED: ("not tested",),
}
# Wording that states a verdict: allowed only as the text of a verdict link, or as a term being
# defined (emphasised) in an explanation.
VOCABULARY = (r"\bseparated\b|outside (?:the )?noise|inside the noise|(?:within|beyond) (?:training |the )?noise"
              r"|not significant after holm|cannot be told|single seed\b")

CONDITION = ("model", "train_data", "train_size")  # what defines a configuration besides the method


class Condition(NamedTuple):
    """A configuration besides the method: the model, its training data and their size."""
    model: str
    train_data: str
    train_size: object
SOURCES = {"aggregated": "a", "contrasts": "c", "matched": "m", "matched_between": "b"}


def decide(row, learned: bool = True, trained: bool = True) -> tuple[str, str]:
    """(verdict, why) for one comparison row (a paired difference with `mean_diff` or
    `difference`/`forgetting`, its 95% interval, Holm-adjusted `p_adjusted`/`significant`,
    and `seeds`). With several seeds the interval and the test include training randomness
    (`stats.crossed`); with one, they cover item sampling only, so a change is shown and never
    called separated. `trained` False: no side was trained (the 4-bit base against the base),
    so there is no training randomness to measure and the items decide. `learned` False: a side
    of the comparison did not learn its own training target, so the comparison says nothing."""
    if not learned:
        return CANNOT_TELL, "a method compared did not improve its own training target there"
    p = row.get("p_adjusted")
    if p is None or pd.isna(p):
        return NOT_TESTED, "no paired test (too few items, or no item differs)"
    lo, hi = row.get("ci_low"), row.get("ci_high")
    no_interval = lo is None or pd.isna(lo)
    excludes = no_interval or lo > 0 or hi < 0
    if bool(row.get("significant")) and excludes:
        seeds = row.get("seeds")
        if trained and (seeds is None or pd.isna(seeds) or int(seeds) < 2):
            return SINGLE_SEED, ("the Holm-adjusted test on the items rejects no change, but with one seed "
                                 "training randomness is not measured")
        return SEPARATED, ("the Holm-adjusted test rejects no change and the interval excludes zero, training "
                           "randomness included")
    if not no_interval and (lo > 0 or hi < 0):
        return NOT_AFTER_HOLM, "the interval excludes zero, the Holm-adjusted test does not reject"
    return INSIDE, "the interval includes zero and the Holm-adjusted test does not reject"


def _same(col: pd.Series, value) -> pd.Series:
    """`col == value` whether sizes are ints, floats or text (16, 16.0, "16"): a contrasts
    column such as `from` holds sizes and names alike, and a table read back from CSV
    (`Tables.read`) turns a size column with gaps into floats."""
    num = pd.to_numeric(col, errors="coerce")
    v = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if not pd.isna(v) and not isinstance(value, bool):
        return num == float(v)
    return col.astype(str) == str(value)


def _in_condition(df: pd.DataFrame, condition: tuple) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for key, value in zip(CONDITION, condition):
        mask &= _same(df[key], value)
    return mask


def target_row(aggregated: pd.DataFrame, condition: tuple, method: str):
    """The index of `method`'s change on its own training target in `condition` (vs its
    reference, headline metric), or None when the grid has no such row."""
    if aggregated.empty:
        return None
    g = aggregated[(aggregated["comparison"] == "vs base") & (aggregated["method"] == method)
                   & aggregated["headline"].astype(bool) & (aggregated["task"] == aggregated["target_nll"])]
    g = g[_in_condition(g, condition)]
    return None if g.empty else g.index[0]


def learned_target(aggregated: pd.DataFrame, condition: tuple, method: str) -> bool | None:
    """Did `method` improve its own training target in `condition` (lower bits per byte,
    separated, or on one seed separated on the items)? None when the grid has no such row."""
    i = target_row(aggregated, condition, method)
    if i is None:
        return None
    r = aggregated.loc[i]  # a single seed's gain on the items shows that it trained, if not by how much
    return bool((r["verdict"] if "verdict" in r else decide(r)[0]) in (SEPARATED, SINGLE_SEED) and r["mean_diff"] < 0)


def untrained_sides(aggregated: pd.DataFrame, row, main: tuple | None = None) -> list[tuple[str, str]]:
    """(method, "from"/"to") for each method of a factor contrast row ("B - A" or one method)
    that did not improve its own target at that end of the factor; the other factors sit at the
    row's own values."""
    factor = str(row["factor"]).replace("method x ", "")
    if factor not in CONDITION:
        return []
    methods = [m.strip() for m in str(row["method"]).split(" - ")]
    out = []
    for end in ("from", "to"):
        condition = tuple(row[end] if key == factor else row[key] for key in CONDITION)
        out += [(m, end) for m in methods if learned_target(aggregated, condition, m) is False]
    return out


def annotate(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables with `verdict`, `why` and `verdict_id` columns on every comparison table
    (aggregated first: a factor's verdict asks whether each method learned its target)."""
    out = dict(tables)
    for name in SOURCES:
        df = out.get(name)
        if df is None or df.empty or ("p_adjusted" not in df and "significant" not in df):
            continue
        df = df.copy()
        decided = []
        for i, r in df.iterrows():
            learned = not (name == "contrasts" and untrained_sides(out["aggregated"], r))
            trained = not (name == "aggregated" and r.get("method") in REFERENCES)
            decided.append(decide(r, learned, trained))
        df["verdict"] = [v for v, _ in decided]
        df["why"] = [w for _, w in decided]
        if name == "contrasts":
            df["why"] = [w if v != CANNOT_TELL else w + ": " + ", ".join(
                f"{m} with {r['factor'].replace('method x ', '')} {r[end]}" for m, end in
                untrained_sides(out["aggregated"], r)) for (_, r), v, w in zip(df.iterrows(), df["verdict"], df["why"])]
        df["verdict_id"] = [f"{SOURCES[name]}{i}" for i in df.index]
        out[name] = df
    return out


def table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per comparison of the study: what is compared, on which runs, the estimate, its
    interval, the test, the noise bound used, the verdict and why. Built once from `annotate`d
    tables; committed as `verdicts.csv` beside the results."""
    t = annotate(tables)
    frames = []
    for name in SOURCES:
        df = t.get(name)
        if df is None or df.empty or "verdict" not in df:
            continue
        if name == "aggregated":
            what = df["comparison"] + ": " + df["method"] + " vs " + df["reference"].astype(str)
            other = df["reference"]
        elif name == "contrasts":
            what = df["factor"] + ": " + df["method"].astype(object).fillna("").astype(str) + " " + df["from"].astype(str) + " → " \
                + df["to"].astype(str)
            other = df["from"].astype(str) + " → " + df["to"].astype(str)
        elif name == "matched":
            what = "forgetting at matched learning: " + df["method"] + " since step 0"
            other = pd.Series("step 0", index=df.index)
        else:
            what = "forgetting at matched learning: " + df["method"] + " vs " + df["other"]
            other = df["other"]
        task = df["forgetting_task"] if "forgetting_task" in df else df["task"]
        metric = df["metric"] if "metric" in df else pd.Series("bits_per_byte", index=df.index)
        estimate = df["mean_diff"] if "mean_diff" in df else df["difference"] if "difference" in df else df["forgetting"]
        runs = [",".join(x for x in (r.get("run_id"), r.get("reference_run_id"), r.get("run_id_from"),
                                     r.get("run_id_to")) if isinstance(x, str) and x) for _, r in df.iterrows()]
        frames.append(pd.DataFrame({
            "id": df["verdict_id"], "source": name, "source_row": df.index, "comparison": what,
            "model": df["model"], "train_data": df["train_data"], "train_size": df["train_size"],
            "seed": df["seed"] if "seed" in df else np.nan, "method": df["method"], "other": other,
            "task": task, "metric": metric, "headline": df["headline"] if "headline" in df else True,
            "seeds": df["seeds"] if "seeds" in df else 1, "n": df["n"], "estimate": estimate,
            "ci_low": df["ci_low"], "ci_high": df["ci_high"], "test": df.get("test"),
            "p_adjusted": df["p_adjusted"],
            "se": df["se"] if "se" in df else np.nan,
            "seed_var": df["seed_var"] if "seed_var" in df else np.nan,
            "verdict": df["verdict"], "why": df["why"], "run_ids": runs}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "verdict"])


def phrase(verdict: str) -> str:
    """The words that state `verdict` in a sentence."""
    return {NOT_AFTER_HOLM: "not significant after Holm's correction"}.get(verdict, verdict)
