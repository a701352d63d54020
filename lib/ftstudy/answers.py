"""The study's four answers, as short sentences generated from its tables: per question a
lead sentence (what the README shows), then the details behind it.

Every number in an answer is written through `Citations.num`, which formats a value read
from one cell of one table and records where it came from (table, row, column, run ids):
the front page links each number to its runs, and a test checks that every number in the
text is one of the cited table values, so no number is typed by hand. A question the grid
cannot answer says so and why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ftstudy import analysis, stats

QUESTIONS = {
    "q1": "Which method changes which task, and by how much?",
    "q2": "What does learning one task cost on the others (math, commonsense, domain knowledge)?",
    "q3": "Does the base model change the answer?",
    "q4": "Does more training data change the answer?",
}
# Two-sided 5% test with 80% power: the smallest true difference a paired test detects is
# about (1.96 + 0.84) standard errors of the mean difference.
MDE_FACTOR = 1.96 + 0.84
# An accuracy whose smallest detectable change exceeds this cannot show forgetting at all.
BLIND_ACCURACY = 0.2
CONDITION = ("model", "train_data", "train_size")  # what defines a configuration besides the method
PLACES = " (the two methods change places: each side's own test separates them)"
NUMBER = re.compile(r"(?<![\w.])[+−-]?\d+(?:\.\d+)?(?![\w])")


@dataclass
class Citations:
    """The study's tables by name, and every number cited from them."""
    tables: dict[str, pd.DataFrame]
    cited: list[dict] = field(default_factory=list)

    def num(self, table: str, row, column: str, fmt: str = "+.3f") -> str:
        value = self.tables[table].loc[row, column]
        text = str(int(value)) if fmt == "d" else format(float(value), fmt) if fmt else str(value)
        self.cited.append(dict(table=table, row=row, column=column, text=text, fmt=fmt,
                               run_ids=self.runs_behind(table, row)))
        return f"\x00{len(self.cited) - 1}\x00"

    def runs_behind(self, table: str, row) -> list[str]:
        """The run folders a table row was computed from (a pooled row: every seed's run)."""
        r = self.tables[table].loc[row]
        ids = [i for c in ("run_id", "run_id_from", "run_id_to") if c in r and isinstance(r[c], str)
               for i in r[c].split(",")]
        runs = self.tables.get("runs", pd.DataFrame())
        if not ids and not runs.empty and {"model", "method"} <= set(r.index):
            pick = runs[(runs["status"] == "done") & (runs["model"] == r["model"])
                        & runs["method"].isin([r["method"], r.get("reference")])]
            for k in ("train_data", "train_size"):
                if k in r.index:
                    pick = pick[(pick[k] == r[k]) | pick["method"].isin(("base", "base_4bit"))]
            ids = sorted(pick["run_id"])
        return ids

    def render(self, text: str, link=None) -> str:
        """`text` with each cited number in place: plain, or through `link(citation)`."""
        return re.sub("\x00(\\d+)\x00", lambda m: (link or (lambda cit: cit["text"]))(self.cited[int(m.group(1))]), text)

    def interval(self, table: str, row, fmt: str = "+.3f", column: str = "mean_diff") -> str:
        """`column`'s value and its 95% interval (`ci_low`, `ci_high` of the same row)."""
        t = self.tables[table]
        if pd.isna(t.loc[row, "ci_low"]):
            return f"{self.num(table, row, column, fmt)} (no interval)"
        return (f"{self.num(table, row, column, fmt)} [{self.num(table, row, 'ci_low', fmt)}, "
                f"{self.num(table, row, 'ci_high', fmt)}]")


def detectable(aggregated: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and task (headline metric, vs the reference): the minimum detectable
    difference, MDE_FACTOR times the median standard error of the methods' paired mean
    differences (read from the width of their 95% intervals; for an accuracy, bounded below as
    explained inline), and `mde_max` from the largest
    (the least sensitive method: what "no method lost" can claim). Smaller true changes are
    likely to be called "inside the noise". Against the reference, not between two methods
    (whose difference has both methods' noise)."""
    if aggregated.empty:
        return pd.DataFrame()
    vs = aggregated[(aggregated["comparison"] == "vs base") & aggregated["headline"].astype(bool)].copy()
    vs["se"] = (vs["ci_high"] - vs["ci_low"]) / (2 * 1.96)
    # Accuracy: a method no item of which changed has no interval, which says nothing of its
    # sensitivity: it counts with the difference two independent runs at p = 0.5 could detect
    # on n items (conservative for paired items); one with a few changed items has a narrow
    # interval, but no paired test on n items (each the mean of S seeds) detects less than
    # `min_paired_detectable(n) / S`; and no accuracy changes by more than the whole scale.
    acc = vs["metric"] != "bits_per_byte"
    unmeasured = acc & vs["se"].isna()
    vs.loc[unmeasured, "se"] = [stats.min_detectable_difference(int(n)) / MDE_FACTOR for n in vs.loc[unmeasured, "n"]]
    floor = [stats.min_paired_detectable(int(n)) / max(int(s), 1) / MDE_FACTOR
             for n, s in zip(vs.loc[acc, "n"], vs.loc[acc, "seeds"].fillna(1))]
    vs.loc[acc, "se"] = np.maximum(vs.loc[acc, "se"].to_numpy(dtype=float), floor)
    keys = ["model", "train_data", "train_size", "task", "metric"]
    out = vs.groupby(keys, dropna=False).agg(n=("n", "max"), seeds=("seeds", "max"), se=("se", "median"),
                                             se_max=("se", "max"))
    out["mde"], out["mde_max"] = MDE_FACTOR * out["se"], MDE_FACTOR * out["se_max"]
    binary = out.index.get_level_values("metric") != "bits_per_byte"
    for col in ("mde", "mde_max"):
        out[col] = np.where(binary, np.minimum(out[col], 1.0), out[col])
    return out.reset_index()


def main_condition(aggregated: pd.DataFrame, contrasts: pd.DataFrame | None = None) -> tuple | None:
    """The configuration the verdicts rest on: the (model, training data, size) with the most
    seeds and methods compared with their reference; among equals, the one from which the most
    factors' contrasts start (a grid's first values), so that each factor's change is read from it."""
    vs = aggregated[aggregated["comparison"] == "vs base"] if not aggregated.empty else aggregated
    if vs.empty:
        return None
    g = vs.groupby(list(CONDITION)).agg(seeds=("seeds", "max"), methods=("method", "nunique"))
    starts = []  # (condition, factor) of each factor contrast: every pair of a factor's values
    if contrasts is not None and not contrasts.empty:
        for _, r in contrasts[contrasts["factor"].isin(CONDITION)].iterrows():
            starts.append((tuple(_text(r["from"] if key == r["factor"] else r[key]) for key in CONDITION),
                           r["factor"]))
    conditions = [tuple(_text(v) for v in key) for key in g.index]
    # a grid's first values start the most factors' contrasts, then the most pairs
    g["factors"] = [len({f for c, f in starts if c == k}) for k in conditions]
    g["pairs"] = [sum(c == k for c, _ in starts) for k in conditions]
    return g.sort_values(["seeds", "methods", "factors", "pairs"], ascending=False, kind="stable").index[0]


def _text(value) -> str:
    """A condition's value as text, whether read back as int, float or text (16, 16.0, "16")."""
    num = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return str(int(num)) if not pd.isna(num) and float(num).is_integer() else str(value)


def _unit(metric: str) -> str:
    return "bits/byte" if metric == "bits_per_byte" else "accuracy"


def _fmt(metric: str) -> str:
    return "+.3f" if metric == "bits_per_byte" else "+.2f"


def _item_separated(row) -> bool:
    """The Holm-adjusted test rejects, and (with seeds pooled, whose test sees items only)
    the interval over seeds and items excludes zero too."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    excludes = pd.isna(lo) or lo > 0 or hi < 0
    return bool(row["significant"]) and bool(excludes)


def _within_training_noise(row) -> bool:
    """A comparison on fewer seeds than its sides have, no larger than what training
    randomness alone moves it by (`training_noise`, pooled from every side's seeds)."""
    noise = row.get("training_noise")
    return noise is not None and not pd.isna(noise) and abs(float(row["mean_diff"])) <= float(noise)


def _separated(row) -> bool:
    """Outside the noise: separated from zero item by item (`_item_separated`) and, where the
    spread across seeds is known, larger than training randomness alone could make it."""
    return _item_separated(row) and not _within_training_noise(row)


def _tag(row, c: "Citations | None" = None, table: str = "", i=None, inline: bool = False) -> str:
    """What a reader needs after an interval: nothing when separated from zero; "within
    training noise" (with its size when `c` can cite it) when only the seeds' spread explains
    it; "not significant after Holm" when the interval alone excludes zero; else "inside the
    noise". In parentheses, or after a comma when `inline` (already inside parentheses)."""
    if _separated(row):
        return ""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if _item_separated(row):
        size = f": the seed alone moves it by up to ±{c.num(table, i, 'training_noise', '.3f')}" if c else ""
        text = f"within training noise{size}"
    elif not pd.isna(lo) and (lo > 0 or hi < 0):
        text = "not significant after Holm's correction"
    else:
        text = "inside the noise"
    return f", {text}" if inline else f" ({text})"


def _whole_scale(detectable_row) -> bool:
    """An accuracy on too few items for any paired test to reject "no change", even with every
    item changed one way (`stats.min_paired_detectable` above 1)."""
    return (detectable_row["metric"] != "bits_per_byte"
            and stats.min_paired_detectable(int(detectable_row["n"])) > 1)


def _direction(row) -> str:
    """For a separated change of an effect: whether the task came out better or worse
    (lower bits/byte and higher accuracy are better)."""
    if not _separated(row):
        return ""
    better = row["mean_diff"] < 0 if row["metric"] in stats.LOWER_IS_BETTER else row["mean_diff"] > 0
    return " (better)" if better else " (worse)"


def _unchanged(row) -> bool:
    """No item's score moved at all (an accuracy with no interval and no change)."""
    return pd.isna(row.get("ci_low")) and float(row["mean_diff"]) == 0


def _listing(c: Citations, table: str, g: pd.DataFrame, name: str, what: str, fmt_of, direction=False) -> str:
    """'name interval (tag)' per row, rows with no change at all folded into one clause;
    with `direction`, a separated change says whether the task came out better or worse."""
    moved = [f"{r[name]} {c.interval(table, i, fmt_of(r))}{_tag(r, c, table, i)}{_direction(r) if direction else ''}"
             for i, r in g.iterrows() if not _unchanged(r)]
    still = [str(r[name]) for _, r in g.iterrows() if _unchanged(r)]
    if still:
        moved.append(f"{what} {', '.join(still)}")
    return "; ".join(moved)


def _same(col: pd.Series, value) -> pd.Series:
    """`col == value` for a table read back from CSV, where sizes may be ints, floats or text."""
    num = pd.to_numeric(col, errors="coerce")
    if isinstance(value, str) and not pd.isna(pd.to_numeric(value, errors="coerce")):
        value = float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return num == float(value)
    return col.astype(str) == str(value)


def q1(c: Citations, main: tuple) -> list[str]:
    agg, mde = c.tables["aggregated"], c.tables["detectable"]
    model, label, size = main
    vs = agg[(agg["comparison"] == "vs base") & agg["headline"].astype(bool) & (agg["model"] == model)
             & (agg["train_data"] == label) & (agg["train_size"] == size)]
    first = vs.drop_duplicates("method")
    seeds = ", ".join(f"{r['method']} {c.num('aggregated', i, 'seeds', 'd')}" for i, r in first.iterrows())
    out = [f"Trained on **{label}** ({c.num('aggregated', vs.index[0], 'train_size', 'd')} examples, {model}; "
           f"seeds per method: {seeds}; with one seed an interval covers item sampling only), change vs each "
           "method's reference model, mean [confidence interval], lower bits/byte and higher accuracy are better; "
           "\"inside the noise\": not separated from zero after Holm's correction:"]
    for task, g in vs.groupby("task", sort=False):
        metric = g["metric"].iloc[0]
        g = g.assign(order=g["mean_diff"] * (1 if metric == "bits_per_byte" else -1)).sort_values("order")
        parts = _listing(c, "aggregated", g, "method", "no item changed for", lambda r: _fmt(r["metric"]))
        m = mde[(mde["model"] == model) & (mde["train_data"] == label) & (mde["train_size"] == size)
                & (mde["task"] == task)]
        f = ".3f" if metric == "bits_per_byte" else ".2f"
        j = m.index[0]
        spread = (f" (median over methods; {c.num('detectable', j, 'mde_max', f)} for the least sensitive)"
                  if format(m.loc[j, "mde"], f) != format(m.loc[j, "mde_max"], f) else "")
        n = c.num("aggregated", g.index[0], "n", "d")
        detect = (f"; changes smaller than about {c.num('detectable', j, 'mde', f)} {_unit(metric)}{spread} "
                  "are unlikely to be detected against the reference (before Holm's correction, which needs larger "
                  "ones)") if len(m) and not pd.isna(m["mde"].iloc[0]) else ""
        if len(m) and _whole_scale(m.loc[j]):
            detect = f"; with {n} items no change could be detected against the reference"
        out.append(f"**{task}** ({_unit(metric)}, {n} items): " + parts + detect + ".")
    best = _best_on_target(c, vs, main)
    prefix = f"On its target {vs['target_nll'].dropna().iloc[0] if vs['target_nll'].notna().any() else ''}, "
    if best.startswith(prefix):  # the lead already named the target
        best = "Of all methods, " + best[len(prefix):]
    return [_lead_q1(vs) + " " + best + _quantised_net(c, main)] + out


def _quantised_net(c: Citations, main: tuple) -> str:
    """For methods trained on the 4-bit base (their reference): what quantising the base cost
    on the target, and their net change against the unquantised base, which the change vs
    their own reference leaves out (rows "vs unquantised base" of `aggregated`)."""
    agg = c.tables["aggregated"]
    q = agg[(agg["comparison"] == "vs unquantised base") & agg["headline"].astype(bool)
            & (agg["task"] == agg["target_nll"])]
    for key, value in zip(CONDITION, main):
        q = q[_same(q[key], value)]
    cost = agg[(agg["comparison"] == "vs unquantised base") & agg["headline"].astype(bool)
               & (agg["model"] == main[0]) & agg["train_data"].isna()]
    out = []
    for i, r in q.iterrows():
        k = cost[cost["task"] == r["task"]]
        paid = (f"quantising the base ({k['method'].iloc[0]}) changed {r['task']} by "
                f"{c.interval('aggregated', k.index[0])} bits/byte, so " if len(k) else "")
        out.append(f" {r['method']} is measured against the quantised base it trains on; {paid}against the "
                   f"unquantised base its net change is {c.interval('aggregated', i)}{_tag(r)}{_direction(r)}.")
    return "".join(out)


def _names(methods) -> str:
    methods = list(methods)
    return ", ".join(methods[:-1]) + " and " + methods[-1] if len(methods) > 1 else "".join(methods)


def _lead_q1(vs: pd.DataFrame) -> str:
    """Which methods moved their target outside the noise, in words (the numbers follow)."""
    target = vs["target_nll"].dropna().iloc[0] if vs["target_nll"].notna().any() else None
    t = vs[vs["task"] == target].sort_values("mean_diff")
    if target is None or t.empty:
        return "No method was scored on its training target, so the question has no answer here."
    gained = [r["method"] for _, r in t.iterrows() if _separated(r) and r["mean_diff"] < 0]
    rest = [m for m in t["method"] if m not in gained]
    if not gained:
        return f"On its target {target}, no method improved outside the noise."
    return (f"On its target {target}, {_names(gained)} improved outside the noise"
            + (f"; {_names(rest)} did not." if rest else "."))


def _best_on_target(c: Citations, vs: pd.DataFrame, main: tuple) -> str:
    """The two methods that learned their target most (change vs their own reference), and
    whether the paired difference of changes (`contrasts`, factor method: the seeds both
    have) separates them; if not, only the larger point estimate is named."""
    k = c.tables["contrasts"]
    target = vs["target_nll"].dropna().iloc[0] if vs["target_nll"].notna().any() else None
    t = vs[vs["task"] == target].sort_values("mean_diff")
    if target is None or len(t) < 2:
        return "With fewer than two methods on the target task, no method can be called best."
    first, second = t.iloc[0]["method"], t.iloc[1]["method"]
    pair = k[(k["factor"] == "method") & (k["task"] == target) & (k["model"] == main[0])
             & (k["train_data"] == main[1]) & _same(k["train_size"], main[2])
             & k["from"].isin([first, second]) & k["to"].isin([first, second])] if not k.empty else k
    if pair.empty:
        return f"{first} has the largest point estimate on {target}; no paired test of it against {second} was recorded."
    i = pair.index[0]
    r = pair.loc[i]
    head = (f"On its target {target}, {first} learned most, separated from the runner-up {second}" if _separated(r)
            else f"On its target {target}, {first} has the largest point estimate but is not separated from {second}"
            + (" beyond training noise" if _item_separated(r) else ""))
    return (f"{head}: on the {c.num('contrasts', i, 'seeds', 'd')} seed(s) both ran, {r['from']} changed by "
            f"{c.num('contrasts', i, 'change_from')} and {r['to']} by {c.num('contrasts', i, 'change_to')} bits/byte, "
            f"each against its own reference; difference {c.interval('contrasts', i)}, Holm-adjusted p "
            f"{c.num('contrasts', i, 'p_adjusted', '.2g')}{_tag(r, c, 'contrasts', i, inline=True)}.")


def q2(c: Citations, main: tuple) -> list[str]:
    agg = c.tables["aggregated"]
    model, label, size = main
    vs = agg[(agg["comparison"] == "vs base") & agg["headline"].astype(bool) & (agg["model"] == model)
             & (agg["train_data"] == label) & (agg["train_size"] == size)]
    target = vs["target_nll"].dropna().iloc[0] if vs["target_nll"].notna().any() else None
    other = vs[vs["task"] != target]
    loss = np.where(other["metric"] == "bits_per_byte", other["mean_diff"] > 0, other["mean_diff"] < 0)
    worse = other[[_separated(r) for _, r in other.iterrows()] & loss] if len(other) else other
    mde = c.tables["detectable"]
    mde = mde[(mde["model"] == model) & (mde["train_data"] == label) & _same(mde["train_size"], size)
              & (mde["task"] != target)] if not mde.empty else mde
    blind = mde[(mde["metric"] != "bits_per_byte") & (mde["mde"] > BLIND_ACCURACY)] if not mde.empty else mde
    out, lead = [], []
    seeing = mde[~mde.index.isin(blind.index)] if not mde.empty else mde
    if len(blind):
        out.append("Commonsense and domain knowledge cannot be answered here: on " + ", ".join(
            f"{r['task']} no change could be detected with {c.num('detectable', i, 'n', 'd')} items" if _whole_scale(r)
            else f"{r['task']} only changes larger than about {c.num('detectable', i, 'mde', '.2f')} accuracy would be "
            "detected" for i, r in blind.iterrows()) + "; smaller losses there cannot be ruled out.")
    if worse.empty:
        sees = "; ".join(f"on {r['task']} a loss of about {c.num('detectable', i, 'mde_max', '.3f' if r['metric'] == 'bits_per_byte' else '.2f')} "
                         f"{_unit(r['metric'])} would likely have been detected for every method (before Holm's correction, "
                         "which needs larger ones)" for i, r in seeing.iterrows())
        lead.append(f"Trained on {label}, no method lost outside the noise on the other tasks "
                    f"({', '.join(sorted(other['task'].unique()))})" + (f"; {sees}." if sees else "."))
    else:
        lead.append("Forgetting outside the noise: " + "; ".join(
            f"{r['method']} on {r['task']} {c.interval('aggregated', i, _fmt(r['metric']))}"
            for i, r in worse.iterrows()) + "; no other loss outside the noise.")
    net = _quantised_losses(c, main, target)
    out = [" ".join(lead + ([net] if net else []) + out[:1])] + out[1:] + _matched(c, main)
    out += _factor(c, "train_data", "training data", main) + _interaction(c, "train_data", "training data", main)
    return out


def _quantised_losses(c: Citations, main: tuple, target) -> str:
    """Tasks other than the target on which a method trained on the 4-bit base ends worse than
    the unquantised base, outside the noise (the quantisation's cost, which its change vs its
    own reference does not show)."""
    agg = c.tables["aggregated"]
    q = agg[(agg["comparison"] == "vs unquantised base") & agg["headline"].astype(bool) & (agg["task"] != target)
            & agg["train_data"].notna()]
    for key, value in zip(CONDITION, main):
        q = q[_same(q[key], value)]
    worse = [(i, r) for i, r in q.iterrows() if _direction(r) == " (worse)"]
    if not worse:
        return ""
    return ("Against the unquantised base, though, " + "; ".join(
        f"{r['method']} ends worse on {r['task']} by {c.interval('aggregated', i, _fmt(r['metric']))} {_unit(r['metric'])}"
        for i, r in worse) + ": the cost of quantising its base, not of its training.")


def _matched(c: Citations, main: tuple) -> list[str]:
    m = c.tables.get("matched", pd.DataFrame())
    if m.empty or "forgetting" not in m:
        return ["No run kept a learning-forgetting curve, so forgetting at matched learning is not measured."]
    m = m[(m["model"] == main[0]) & (m["train_data"] == main[1]) & _same(m["train_size"], main[2])]
    out = [f"Forgetting at matched learning on {task}: {str(g['note'].iloc[0])}." for task, g
           in m[m["forgetting"].isna()].groupby("forgetting_task")]
    m = m[m["forgetting"].notna()]
    for (task, seed), g in m.groupby(["forgetting_task", "seed"]):
        g = g.sort_values("forgetting")
        lo, hi = g.index[0], g.index[-1]
        note = " (the level is set by a method that learned little: only the start of training is compared)" \
            if str(g["note"].iloc[0] or "").strip() not in ("", "nan") else ""
        sep = c.tables.get("matched_between", pd.DataFrame())
        sep = sep[(sep["forgetting_task"] == task) & (sep["seed"] == seed) & (sep["model"] == main[0])
                  & (sep["train_data"] == main[1]) & _same(sep["train_size"], main[2])] if not sep.empty else sep
        pairs = [f"{r['method']} vs {r['other']}" for _, r in sep.iterrows() if _separated(r)] if not sep.empty else []
        steps = g["at_step"].astype(float)
        out.append(
            f"At matched learning (each curve taken where it first gains "
            f"{c.num('matched', lo, 'matched_learning', '.3f')} bits/byte on the target, seed "
            f"{c.num('matched', lo, 'seed', 'd')}, between training steps {c.num('matched', steps.idxmin(), 'at_step', '.2f')} "
            f"and {c.num('matched', steps.idxmax(), 'at_step', '.2f')}, interpolated linearly between the curve's "
            f"measured steps), forgetting on {task} ranged from {g.loc[lo, 'method']} "
            f"{c.interval('matched', lo, column='forgetting')} to {g.loc[hi, 'method']} "
            f"{c.interval('matched', hi, column='forgetting')} bits/byte; "
            + (("separated after Holm: " + ", ".join(pairs) if pairs else "no pair of methods separated after Holm")
               if len(sep) else "no pair tested")
            + f"{note}.")
    return out


def _factor(c: Citations, factor: str, words: str, main: tuple) -> list[str]:
    """Sentences for one changed factor from `contrasts`: per method, the change of its effect
    on each task when the factor moves away from the main condition."""
    k = c.tables["contrasts"]
    if k.empty or factor not in set(k["factor"]):
        return [f"The grid does not vary the {words}, so it cannot say how the answer depends on it."]
    k = k[(k["factor"] == factor) & _same(k["from"], main[CONDITION.index(factor)])]
    out = []
    for (to, method), g in k.groupby(["to", "method"], sort=False):
        parts = _listing(c, "contrasts", g, "task", "no change on", lambda r: _fmt(r["metric"]), direction=True)
        i0 = g.index[0]
        failed = [f"with {words} {c.num('contrasts', i0, end, '')}" for _, end in _not_learning(c, g.loc[i0], factor, main)]
        warn = (f"; it showed no detectable gain on its own target {' and '.join(failed)}, so its change here may be "
                "a failure to train rather than the factor's effect" if failed else "")
        out.append(f"{method}, {words} {c.num('contrasts', i0, 'from', '')} → {c.num('contrasts', i0, 'to', '')} "
                   f"({c.num('contrasts', i0, 'seeds', 'd')} seed(s){warn}), change in its effect vs its reference: "
                   + parts + ".")
    return out or [f"No pair of runs differs from the main condition in {words} alone."]


def _reverses(c: Citations, row, factor: str, main: tuple) -> bool:
    """The order of two methods on a task reverses when the factor moves: each condition's
    own paired test of the two (`contrasts`, factor method) separates them, in opposite
    directions, the change of their gap is separated too, and both methods learned their
    target in both conditions (else an untrained run, not a method, is what moved)."""
    k = c.tables["contrasts"]
    pair = {m.strip() for m in str(row["method"]).split(" - ")}
    if not _separated(row) or _not_learning(c, row, factor, main):
        return False

    def gap(condition):
        g = k[(k["factor"] == "method") & (k["task"] == row["task"]) & k["from"].isin(pair) & k["to"].isin(pair)]
        for key, value in zip(CONDITION, condition):
            g = g[_same(g[key], value)]
        return g.iloc[0] if len(g) and _separated(g.iloc[0]) else None

    a, b = gap(main), gap(_condition(main, factor, row["to"]))
    return a is not None and b is not None and a["mean_diff"] * b["mean_diff"] < 0


def _interaction(c: Citations, factor: str, words: str, main: tuple) -> list[str]:
    """Does the factor change the answer? From `contrasts` rows "method x <factor>": the gap
    between two methods (each against its own reference) under the main condition and under
    the other value, and the change of that gap with its interval."""
    k = c.tables["contrasts"]
    if k.empty:
        return []
    k = k[(k["factor"] == f"method x {factor}") & _same(k["from"], main[CONDITION.index(factor)])]
    out = []
    for (to, pair), g in k.groupby(["to", "method"], sort=False):
        parts = [f"{r['task']}: {c.num('contrasts', i, 'change_from', _fmt(r['metric']))} → "
                 f"{c.num('contrasts', i, 'change_to', _fmt(r['metric']))}, "
                 f"change {c.interval('contrasts', i, _fmt(r['metric']))}{_tag(r, c, 'contrasts', i)}"
                 f"{PLACES if _reverses(c, r, factor, main) else ''}"
                 for i, r in g.iterrows() if not _unchanged(r)]
        still = [str(r["task"]) for _, r in g.iterrows() if _unchanged(r)]
        parts += [f"no change on {', '.join(still)}"] if still else []
        i0 = g.index[0]
        untrained = [f"{m} showed no detectable gain on its own target with {words} "
                     f"{c.num('contrasts', i0, end, '')}" for m, end in _not_learning(c, g.loc[i0], factor, main)]
        warn = (f"; cannot be told, not a comparison of two trained methods: {'; '.join(untrained)}"
                if untrained else "")
        out.append(f"The gap {pair} (difference of their changes) with {words} {c.num('contrasts', i0, 'from', '')} "
                   f"→ {c.num('contrasts', i0, 'to', '')} ({c.num('contrasts', i0, 'seeds', 'd')} seed(s){warn}): "
                   + "; ".join(parts) + ".")
    return out


def _condition(main: tuple, factor: str, value) -> tuple:
    """The main condition with one factor moved to `value`."""
    return tuple(value if key == factor else v for key, v in zip(CONDITION, main))


def _did_not_learn(c: Citations, condition: tuple, method: str):
    """The `aggregated` row of `method`'s change on its own training target in `condition`
    when that is no improvement outside the noise (the run did not learn what it was
    trained on, so comparing it with a method that did says nothing about either); else None."""
    agg = c.tables["aggregated"]
    g = agg[(agg["comparison"] == "vs base") & (agg["method"] == method) & agg["headline"].astype(bool)
            & (agg["task"] == agg["target_nll"])]
    for key, value in zip(CONDITION, condition):
        g = g[_same(g[key], value)]
    if g.empty:
        return None
    return None if _separated(g.iloc[0]) and g.iloc[0]["mean_diff"] < 0 else g.index[0]


def _diverged(c: Citations, condition: tuple, method: str) -> str:
    """', its training loss rose from A at the first step to B' when a run of `method` in
    `condition` more than doubled its first logged loss (its rate too high there); else ''."""
    runs = c.tables.get("runs", pd.DataFrame())
    if runs.empty or "loss_max" not in runs:
        return ""
    g = runs[(runs["method"] == method) & (runs["status"] == "done")]
    for key, value in zip(CONDITION, condition):
        g = g[_same(g[key], value)]
    g = g[g["loss_max"] > 2 * g["loss_first"]]
    if g.empty:
        return ""
    i = g.index[0]
    return (f"; its training loss rose from {c.num('runs', i, 'loss_first', '.2f')} at the first step to "
            f"{c.num('runs', i, 'loss_max', '.2f')}")


def _not_learning(c: Citations, r, factor: str, main: tuple) -> list[tuple[str, str]]:
    """(method, "from"/"to") for each method of a contrasts row ("B - A", or one method) that
    showed no detectable gain on its own target at that end of the factor."""
    methods = [x.strip() for x in str(r["method"]).split(" - ")]
    return [(m, end) for end in ("from", "to") for m in methods
            if _did_not_learn(c, _condition(main, factor, r[end]), m) is not None]


def _untrained(c: Citations, r, factor: str, main: tuple, where: str) -> str:
    """Why an interaction row compares no two trained methods: each method that showed no
    detectable gain on its own target in either condition, with its change (and divergence);
    '' when both learned."""
    out = []
    for m, end in _not_learning(c, r, factor, main):
        condition = _condition(main, factor, r[end])
        i = _did_not_learn(c, condition, m)
        row = c.tables["aggregated"].loc[i]
        place = where.format(c.num("contrasts", r.name, end, ""))
        out.append(f"{m} showed no detectable gain on its target {row['task']} {place} (change "
                   f"{c.interval('aggregated', i)}{_tag(row, inline=True)}{_diverged(c, condition, m)})")
    return "; ".join(out)


def _lead_factor(c: Citations, factor: str, words: str, main: tuple, where: str) -> str:
    """Does the factor change the answer: the change of the gap between two methods on the
    main condition's target task (from `contrasts`, "method x <factor>"). No verdict when a
    method showed no gain on its own target in either condition; with fewer seeds than its
    sides have, a change within training noise is said so."""
    k = c.tables["contrasts"]
    agg = c.tables["aggregated"]
    target = agg["target_nll"].dropna().iloc[0] if not agg.empty and agg["target_nll"].notna().any() else None
    k = k[(k["factor"] == f"method x {factor}") & (k["task"] == target)
          & _same(k["from"], main[CONDITION.index(factor)])] if not k.empty else k
    if k.empty:
        return (f"No pair of methods ran under a second {words}, so whether it changes which method "
                "learns most is not measured.")
    parts = []
    for i, r in k.iterrows():
        first, second = (m.strip() for m in str(r["method"]).split(" - "))
        failed = _untrained(c, r, factor, main, where)
        verdict = ("cannot be told" if failed else "yes" if _separated(r)
                   else "not beyond training noise" if _item_separated(r) else "not detectably")
        head = (f"{verdict} for {first} and {second} on {target} (seeds: {c.num('contrasts', i, 'seeds', 'd')}): "
                f"{first}'s change minus {second}'s, each vs its own reference, moved from "
                f"{c.num('contrasts', i, 'change_from')} to {c.num('contrasts', i, 'change_to')} bits/byte "
                f"{where.format(c.num('contrasts', i, 'to', ''))} (change {c.interval('contrasts', i)}"
                f"{_tag(r, c, 'contrasts', i, inline=True)})")
        if failed:
            head += (f", but {failed}, so the gap compares a trained method with an untrained one; "
                     f"it needs a learning rate that trains both")
        elif _reverses(c, r, factor, main):
            head += ", and the two methods change places: each side's own test separates them"
        parts.append(head)
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def q3(c: Citations, main: tuple) -> list[str]:
    k = c.tables["contrasts"]
    if k.empty or "model" not in set(k["factor"]):
        models = sorted(c.tables["aggregated"]["model"].dropna().unique())
        return [f"The grid has one base model ({', '.join(models)}), so it cannot say whether the "
                "base model changes the answer; this question stays open."]
    out = [_lead_factor(c, "model", "base model", main, "on {}"), "Each model is compared with its own reference model, item by item; absolute scores across "
           "models are not compared (their prompt formats and tokenizers differ). The second model also "
           "differs in size and instruction tuning, so a difference is not the architecture's alone."]
    runs = c.tables.get("runs", pd.DataFrame())
    if not runs.empty and "learning_rate" in runs:
        tuned = runs[runs["status"] == "done"].dropna(subset=["learning_rate"])
        if len(tuned) and (tuned.groupby("method")["learning_rate"].nunique() == 1).all():
            out[0] += (" Each method used one learning rate on every model, so a method that gains less on one "
                       "model may only need another rate there; this grid does not tune rates per model.")
    return out + _factor(c, "model", "base model", main) + _interaction(c, "model", "base model", main)


def q4(c: Citations, main: tuple) -> list[str]:
    words = "training examples (one epoch each)"
    if c.tables["contrasts"].empty or "train_size" not in set(c.tables["contrasts"]["factor"]):
        return _factor(c, "train_size", words, main)
    return ([_lead_factor(c, "train_size", words, main, "with {} examples")] + _factor(c, "train_size", words, main)
            + _interaction(c, "train_size", words, main))


def build(tables: dict[str, pd.DataFrame]) -> tuple[dict[str, list[str]], Citations]:
    """The answers per question (markdown sentences) and their citations."""
    tables = dict(tables)
    tables.setdefault("detectable", detectable(tables["aggregated"]))
    for name in ("contrasts", "runs", "matched", "matched_between"):
        tables.setdefault(name, pd.DataFrame())
    c = Citations(tables)
    main = main_condition(tables["aggregated"], tables.get("contrasts"))
    if main is None:
        return {q: ["No fine-tuned run has finished, so there is no answer yet."] for q in QUESTIONS}, c
    return {"q1": q1(c, main), "q2": q2(c, main), "q3": q3(c, main), "q4": q4(c, main)}, c


def load_tables(outputs: str | Path) -> dict[str, pd.DataFrame]:
    outputs = Path(outputs)
    names = ["aggregated", "contrasts", "runs", "matched", "matched_between", "detectable"]
    return {n: analysis.load_table(outputs, n) for n in names if (outputs / f"{n}.csv").is_file()}


def markdown(answers: dict[str, list[str]], c: Citations, link=None, brief: bool = False) -> str:
    """The answers as markdown: per question its lead sentence, then (unless `brief`) the
    details as a list; `link(citation)` renders a number."""
    if brief:
        return "\n\n".join(f"**{QUESTIONS[q]}** {c.render(lines[0], link)}" for q, lines in answers.items())
    return "\n\n".join(f"**{QUESTIONS[q]}**\n\n{c.render(lines[0], link)}\n\n"
                       + "\n".join(f"- {c.render(s, link)}" for s in lines[1:])
                       for q, lines in answers.items()).replace("\n\n\n", "\n\n")


def numbers_in(text: str) -> list[str]:
    """The numbers a reader sees in `text` (not digits inside names like gsm8k or smollm2)."""
    return [n.replace("−", "-") for n in NUMBER.findall(text)]
