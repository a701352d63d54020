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

import numpy as np
import pandas as pd

from ftstudy.analysis import detectable, measures, stats, verdicts, views
from ftstudy.compute.evaluate import SOLUTION_TASKS, headline_metric
from ftstudy.compute.methods import REFERENCES
from ftstudy.analysis.verdicts import CANNOT_TELL, CONDITION, SEPARATED, SINGLE_SEED, Condition

QUESTIONS = {
    "q1": "Which method changes which task, and by how much?",
    "q2": "What does learning one task cost on the others (math, commonsense, domain knowledge)?",
    "q3": "Does the base model change the answer?",
    "q4": "Does more training data change the answer?",
}
# A bounded score (accuracy, p(correct)) whose smallest detectable change exceeds this cannot
# show forgetting at all.
BLIND_ACCURACY = 0.2
PLACES = " (the two methods change places: each side's own test separates them)"
NUMBER = re.compile(r"(?<![\w.])[+−-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?%?(?![\w])")


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

    def verdict(self, table: str, row, text: str | None = None) -> str:
        """The verdict of one comparison (`verdicts.annotate`'s column of `table`'s `row`), in
        its own words or `text` (one of `verdicts.PHRASES`), cited so it links to its row of
        the verdicts table."""
        r = self.tables[table].loc[row]
        words = text or verdicts.phrase(r["verdict"])
        assert words.lower() in verdicts.PHRASES[r["verdict"]], (words, r["verdict"])
        self.cited.append(dict(table=table, row=row, column="verdict", text=words, fmt="",
                               verdict_id=r["verdict_id"], verdict=r["verdict"], run_ids=[]))
        return f"\x00{len(self.cited) - 1}\x00"

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


def main_condition(aggregated: pd.DataFrame, contrasts: pd.DataFrame | None = None) -> Condition | None:
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
    return Condition(*g.sort_values(["seeds", "methods", "factors", "pairs"], ascending=False, kind="stable").index[0])


def _text(value) -> str:
    """A condition's value as text, whether read back as int, float or text (16, 16.0, "16")."""
    num = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return str(int(num)) if not pd.isna(num) and float(num).is_integer() else str(value)


_unit, _fmt = measures.unit, measures.fmt


def _separated(row) -> bool:
    """The verdicts table says separated (`verdicts.decide`: the one rule)."""
    return row.get("verdict") == SEPARATED


def _tag(row, c: "Citations", table: str, i, inline: bool = False, direction: bool = False) -> str:
    """The verdict after an interval, linked to its row: "separated" (with `direction`, also
    whether the task came out better or worse); "single seed"; "not significant after Holm's
    correction"; "inside the noise"; "cannot be told". In parentheses, or after a comma when
    `inline` (already inside ones)."""
    text = c.verdict(table, i)
    if direction and row["verdict"] in (SEPARATED, SINGLE_SEED):
        text += "; " + _direction(row)
    return f", {text}" if inline else f" ({text})"


def _whole_scale(detectable_row) -> bool:
    """An accuracy on too few items for any paired test to reject "no change", even with every
    item changed one way (`stats.min_paired_detectable` above 1)."""
    return (measures.binary(detectable_row["metric"])
            and stats.min_paired_detectable(int(detectable_row["n"])) > 1)


def _direction(row) -> str:
    """Whether a change came out better or worse (lower bits/byte and higher accuracy are better)."""
    better = row["mean_diff"] < 0 if measures.lower_is_better(row["metric"]) else row["mean_diff"] > 0
    return "better" if better else "worse"


def _unchanged(row) -> bool:
    """No item's score moved at all (an accuracy with no interval and no change)."""
    return pd.isna(row.get("ci_low")) and float(row["mean_diff"]) == 0


def _listing(c: Citations, table: str, g: pd.DataFrame, name: str, what: str, fmt_of, direction=False,
             extra=lambda i, r: "", tag: bool = True) -> str:
    """'name interval (tag)' per row, rows with no change at all folded into one clause;
    with `direction`, a separated change says whether the task came out better or worse;
    `extra(i, row)` adds what a reader needs beside a row's number."""
    moved = [f"{r[name]} {c.interval(table, i, fmt_of(r))}{_tag(r, c, table, i, direction=direction) if tag else ''}"
             f"{extra(i, r)}"
             for i, r in g.iterrows() if not _unchanged(r)]
    still = [str(r[name]) for _, r in g.iterrows() if _unchanged(r)]
    if still:
        moved.append(f"{what} {', '.join(still)}")
    return "; ".join(moved)


_same = verdicts._same


def q1(c: Citations, main: Condition) -> list[str]:
    agg, mde = c.tables["aggregated"], c.tables["detectable"]
    model, label, size = main
    vs = agg[(agg["comparison"] == "vs base") & agg["headline"].astype(bool) & (agg["model"] == model)
             & (agg["train_data"] == label) & (agg["train_size"] == size)]
    first = vs.drop_duplicates("method")
    seeds = ", ".join(f"{r['method']} {c.num('aggregated', i, 'seeds', 'd')}" for i, r in first.iterrows())
    out = [f"Trained on **{label}** ({c.num('aggregated', vs.index[0], 'train_size', 'd')} examples, {model}; "
           f"seeds per method: {seeds}; with one seed an interval covers item sampling only), change vs each "
           "method's reference model, mean [confidence interval] and the verdict (see the verdicts table); lower "
           "bits/byte and higher accuracy are better:"]
    for task, g in vs.groupby("task", sort=False):
        metric = g["metric"].iloc[0]
        g = g.assign(order=g["mean_diff"] * (1 if measures.lower_is_better(metric) else -1)).sort_values("order")
        parts = _listing(c, "aggregated", g, "method", "no item changed for", lambda r: _fmt(r["metric"]),
                         extra=lambda i, r: _beside(c, i, r))
        m = mde[(mde["comparison"] == "vs base") & (mde["model"] == model) & (mde["train_data"] == label)
                & _same(mde["train_size"], size) & (mde["task"] == task)]
        f = _fmt(metric).lstrip("+")
        j = m.index[0]
        spread = (f" (median over methods; {c.num('detectable', j, 'mde_max', f)} for the least sensitive)"
                  if format(m.loc[j, "mde"], f) != format(m.loc[j, "mde_max"], f) else "")
        n = c.num("aggregated", g.index[0], "n", "d")
        detect = (f"; changes smaller than about {c.num('detectable', j, 'mde', f)} {_unit(metric)}{spread} "
                  "are unlikely to be detected against the reference (before Holm's correction, which needs larger "
                  f"ones; training randomness {_randomness(m.loc[j])})") if len(m) and not pd.isna(m["mde"].iloc[0]) else ""
        if len(m) and _whole_scale(m.loc[j]):
            detect = f"; with {n} items no change could be detected against the reference"
        here = agg[(agg["comparison"] == "vs base") & (agg["model"] == model) & (agg["train_data"] == label)
                   & (agg["train_size"] == size) & (agg["task"] == task)]
        acc = here[(here["metric"] == headline_metric(task)) & (here["metric"] != metric)]
        what = "accuracy" if len(acc) and measures.binary(acc["metric"].iloc[0]) else "the whole solution"
        beside = (f"; {what} beside it (" + acc["metric"].iloc[0] + ", no verdict drawn): " + _listing(
            c, "aggregated", acc, "method", "no item changed for", lambda r: _fmt(r["metric"]), tag=False)
            if len(acc) else "")
        out.append(f"**{task}** ({_unit(metric)}, {n} items): " + parts + detect + beside + _format(c, here, metric) + ".")
    best = _best_on_target(c, vs, main)
    prefix = f"On its target {vs['target_nll'].dropna().iloc[0] if vs['target_nll'].notna().any() else ''}, "
    if best.startswith(prefix):  # the lead already named the target
        best = "Of all methods, " + best[len(prefix):]
    return [_lead_q1(c, vs) + " " + best + _quantised_net(c, main)] + out


def _format(c: Citations, here: pd.DataFrame, metric: str) -> str:
    """On a GSM8K solution task: what its verdict covers, and how much of each method's change
    (in nats) lay in the annotation format's bytes where the change is beyond item noise."""
    task = here["task"].iloc[0] if len(here) else None
    if task not in SOLUTION_TASKS:
        return ""
    if metric != measures.WITHOUT_FORMAT.get(headline_metric(task)):
        return ("; these runs were scored before the solutions were split into working and annotation format "
                "(calculator annotations and the `#### N` line), so this verdict counts the format too")
    whole = here[(here["metric"] == "nll") & ((here["ci_low"] > 0) | (here["ci_high"] < 0))]
    share = here[(here["metric"] == "format_nll") & here["method"].isin(whole["method"])]
    share = share[share["format_share"].notna()] if "format_share" in share else share.iloc[:0]
    if share.empty:
        return ("; verdicts on the working alone (annotations and the `#### N` line removed); no method's change "
                "of the whole solution in nats has an interval that excludes zero, so no format share is given")
    return ("; verdicts on the working alone (annotations and the `#### N` line removed); the annotation format's "
            "share of each change of the whole solution in nats (a ratio of two mean changes, without an interval), "
            "where that change's interval excludes zero: "
            + ", ".join(f"{r['method']} {c.num('aggregated', i, 'format_share', '.0%')}" for i, r in share.iterrows()))


def _randomness(detectable_row) -> str:
    """How a detectable change counts training randomness, in words."""
    kinds = str(detectable_row.get("training_randomness") or "")
    if kinds == "measured":
        return "included, measured on each method's seeds"
    if "not included" in kinds:
        return "not included for the single-seed methods: no comparison of this task ran several seeds"
    return "included: measured on the seeds, or for a single-seed method assumed as the seeded methods'"


def _beside(c: Citations, i, r) -> str:
    """What a change vs the reference needs said next to it: that the run's training mix
    replays the task's source data, and a method's shift at 0 steps (its control row) when it
    is not an identity at initialisation (prompt tuning)."""
    agg = c.tables["aggregated"]
    out = ""
    if r["task"] in str(r.get("replayed_nll") or "").split(","):
        out += f"; its training mix replays {r['task']}'s source data"
    ctl = agg[(agg["comparison"] == "control") & agg["headline"].astype(bool) & (agg["model"] == r["model"])
              & (agg["method"] == r["method"]) & (agg["task"] == r["task"])]
    if len(ctl) and float(ctl["mean_diff"].iloc[0]) != 0:
        out += f"; at 0 steps (its control, one initialisation) already {c.num('aggregated', ctl.index[0], 'mean_diff', _fmt(r['metric']))}"
    return out


def _quantised_net(c: Citations, main: Condition) -> str:
    """For methods trained on the 4-bit base (their reference): what quantising the base cost
    on the target, and their net change against the unquantised base, which the change vs
    their own reference leaves out (rows "vs unquantised base" of `aggregated`)."""
    agg = c.tables["aggregated"]
    q = agg[(agg["comparison"] == "vs unquantised base") & agg["headline"].astype(bool)
            & (agg["task"] == agg["target_nll"])]
    for key, value in zip(CONDITION, main):
        q = q[_same(q[key], value)]
    cost = agg[(agg["comparison"] == "vs unquantised base") & agg["headline"].astype(bool)
               & (agg["model"] == main.model) & agg["train_data"].isna()]
    out = []
    for i, r in q.iterrows():
        k = cost[cost["task"] == r["task"]]
        paid = (f"quantising the base ({k['method'].iloc[0]}) changed {r['task']} by "
                f"{c.interval('aggregated', k.index[0])} bits/byte, so " if len(k) else "")
        out.append(f" {r['method']} is measured against the quantised base it trains on; {paid}against the "
                   f"unquantised base its net change is {c.interval('aggregated', i)}"
                   f"{_tag(r, c, 'aggregated', i, direction=True)}.")
    return "".join(out)


def _names(methods) -> str:
    methods = list(methods)
    return ", ".join(methods[:-1]) + " and " + methods[-1] if len(methods) > 1 else "".join(methods)


def _lead_q1(c: Citations, vs: pd.DataFrame) -> str:
    """Which methods improved their target, which got worse, which are undecided: each with its
    verdict, linked (the numbers follow)."""
    target = vs["target_nll"].dropna().iloc[0] if vs["target_nll"].notna().any() else None
    t = vs[vs["task"] == target].sort_values("mean_diff")
    if target is None or t.empty:
        return "No method was scored on its training target, so the question has no answer here."
    named = lambda rows: _names(f"{r['method']} ({c.verdict('aggregated', i)})" for i, r in rows)
    gained = [(i, r) for i, r in t.iterrows() if _separated(r) and r["mean_diff"] < 0]
    worse = [(i, r) for i, r in t.iterrows() if _separated(r) and r["mean_diff"] > 0]
    single = [(i, r) for i, r in t.iterrows() if r["verdict"] == SINGLE_SEED]
    rest = [(i, r) for i, r in t.iterrows() if not _separated(r) and r["verdict"] != SINGLE_SEED]
    parts = ([f"{named(gained)} improved"] if gained else []) + ([f"{named(worse)} got worse"] if worse else [])
    parts += [f"{named(single)} changed on the items but ran one seed, so training randomness is not in their "
              "intervals"] if single else []
    parts += [f"{named(rest)} did not improve detectably"] if rest else []
    return f"On its target {target}, " + "; ".join(parts) + "."


def _best_on_target(c: Citations, vs: pd.DataFrame, main: Condition) -> str:
    """The two methods that learned their target most (change vs the reference), and whether
    the paired difference of changes (`contrasts`, factor method: the seeds both have)
    separates them; if not, only the larger point estimate is named. Ranked among the methods
    measured against the base model: one trained on another base (QLoRA on the quantised one)
    starts worse, so its larger change from there is said apart (its net change follows)."""
    k = c.tables["contrasts"]
    target = vs["target_nll"].dropna().iloc[0] if vs["target_nll"].notna().any() else None
    t = vs[vs["task"] == target].sort_values("mean_diff")
    if target is None or len(t) < 2:
        return "With fewer than two methods on the target task, no method can be called best."
    refs = t["reference"].fillna("base") if "reference" in t else pd.Series("base", index=t.index)
    common = t[refs == "base"]
    pool = common if len(common) >= 2 else t
    first, second = pool.iloc[0]["method"], pool.iloc[1]["method"]
    ahead = t[(refs != "base") & (t["mean_diff"] < pool.iloc[0]["mean_diff"])] if pool is common else t.iloc[:0]
    apart = (f" {_names(ahead['method'])} changed more, but against {_names(sorted(set(ahead['reference'])))}, "
             "the quantised base it trains on, which starts worse: its net change against the base model "
             "follows." if len(ahead) else "")
    among = "Of the methods measured against the base model" if len(pool) < len(t) else f"On its target {target}"
    pair = k[(k["factor"] == "method") & (k["task"] == target) & (k["model"] == main.model)
             & (k["train_data"] == main.train_data) & _same(k["train_size"], main.train_size)
             & k["from"].isin([first, second]) & k["to"].isin([first, second])] if not k.empty else k
    if pair.empty:
        return (f"{among}, {first} has the largest point estimate on {target}; no paired test of it against "
                f"{second} was recorded.{apart}")
    i = pair.index[0]
    r = pair.loc[i]
    head = (f"{among}, {first} learned most: against the runner-up {second}" if _separated(r)
            else f"{among}, {first} has the largest point estimate; against the runner-up {second}")
    return (f"{head} the verdict on the gap is {c.verdict('contrasts', i)}: on the {c.num('contrasts', i, 'seeds', 'd')} seed(s) both ran, {r['from']} changed by "
            f"{c.num('contrasts', i, 'change_from')} and {r['to']} by {c.num('contrasts', i, 'change_to')} bits/byte, "
            f"each against its own reference; difference {c.interval('contrasts', i)}, Holm-adjusted p "
            f"{c.num('contrasts', i, 'p_adjusted', '.2g')}{_tag(r, c, 'contrasts', i, inline=True)}.{apart}")


def q2(c: Citations, main: Condition) -> list[str]:
    agg = c.tables["aggregated"]
    model, label, size = main
    vs = agg[(agg["comparison"] == "vs base") & agg["headline"].astype(bool) & (agg["model"] == model)
             & (agg["train_data"] == label) & (agg["train_size"] == size)]
    target = vs["target_nll"].dropna().iloc[0] if vs["target_nll"].notna().any() else None
    other = vs[vs["task"] != target]
    loss = np.where(other["metric"].map(measures.lower_is_better), other["mean_diff"] > 0, other["mean_diff"] < 0)
    worse = other[[r["verdict"] in (SEPARATED, SINGLE_SEED) for _, r in other.iterrows()] & loss] \
        if len(other) else other
    mde = c.tables["detectable"]
    mde = mde[(mde["comparison"] == "vs base") & (mde["model"] == model) & (mde["train_data"] == label)
              & _same(mde["train_size"], size) & (mde["task"] != target)] if not mde.empty else mde
    blind = mde[mde["metric"].map(measures.bounded) & (mde["mde"] > BLIND_ACCURACY)] if not mde.empty else mde
    out, lead = [], []
    seeing = mde[~mde.index.isin(blind.index)] if not mde.empty else mde
    if len(blind):
        out.append("Commonsense and domain knowledge cannot be answered here: on " + ", ".join(
            f"{r['task']} no change could be detected with {c.num('detectable', i, 'n', 'd')} items" if _whole_scale(r)
            else f"{r['task']} only changes larger than about {c.num('detectable', i, 'mde', '.2f')} {_unit(r['metric'])} would be "
            "detected" for i, r in blind.iterrows()) + "; smaller losses there cannot be ruled out.")
    if worse.empty:
        sees = "; ".join(_sees(c, i, r) for i, r in seeing.iterrows())
        lead.append(f"Trained on {label}, no method showed a loss that its paired test detects on the other tasks "
                    f"({', '.join(sorted(other['task'].unique()))}; each comparison is listed under the first "
                    "question)" + (f"; {sees}." if sees else "."))
    else:
        lead.append("Forgetting: " + "; ".join(
            f"{r['method']} on {r['task']} {c.interval('aggregated', i, _fmt(r['metric']))}"
            f"{_tag(r, c, 'aggregated', i)}" for i, r in worse.iterrows())
            + "; no other loss detected by its paired test.")
    net = _quantised_losses(c, main, target)
    out = [" ".join(lead + ([net] if net else []) + out[:1])] + out[1:] + _matched(c, main)
    out += _factor(c, "train_data", "training data", main) + _interaction(c, "train_data", "training data", main)
    return out


def _sees(c: Citations, i, r) -> str:
    """What "no method lost" can claim on one task: the loss the least sensitive method would
    likely have shown; on a bounded score (accuracy, p(correct)) where that is a fifth of the
    scale or more, the median method's, with the least sensitive one's said as too large."""
    f = _fmt(r["metric"]).lstrip("+")
    if measures.bounded(r["metric"]) and r["mde_max"] > BLIND_ACCURACY:
        return (f"on {r['task']} a loss of about {c.num('detectable', i, 'mde', f)} {_unit(r['metric'])} would likely "
                f"have been detected for the median method, but for the least sensitive only one of about "
                f"{c.num('detectable', i, 'mde_max', f)}, so a smaller loss there is not ruled out (before Holm's "
                "correction, which needs larger ones)")
    return (f"on {r['task']} a loss of about {c.num('detectable', i, 'mde_max', f)} {_unit(r['metric'])} would likely "
            "have been detected for every method (before Holm's correction, which needs larger ones)")


def _quantised_losses(c: Citations, main: Condition, target) -> str:
    """Tasks other than the target on which a method trained on the 4-bit base ends worse than
    the unquantised base, on the same evidence as any other loss (separated, or on one seed's
    items): the quantisation's cost, which its change vs its own reference does not show."""
    agg = c.tables["aggregated"]
    q = agg[(agg["comparison"] == "vs unquantised base") & agg["headline"].astype(bool) & (agg["task"] != target)
            & agg["train_data"].notna()]
    for key, value in zip(CONDITION, main):
        q = q[_same(q[key], value)]
    worse = [(i, r) for i, r in q.iterrows() if r["verdict"] in (SEPARATED, SINGLE_SEED) and _direction(r) == "worse"]
    if not worse:
        return ""
    return ("Against the unquantised base, though, " + "; ".join(
        f"{r['method']} ends worse on {r['task']} by {c.interval('aggregated', i, _fmt(r['metric']))} {_unit(r['metric'])}"
        f"{_tag(r, c, 'aggregated', i)}" for i, r in worse) + ": what quantising its base cost (its change against its "
        "own, quantised reference is listed under the first question).")


def _matched(c: Citations, main: Condition) -> list[str]:
    m = c.tables.get("matched", pd.DataFrame())
    if m.empty or "forgetting" not in m:
        return ["No run kept a learning-forgetting curve, so forgetting at matched learning is not measured."]
    m = m[(m["model"] == main.model) & (m["train_data"] == main.train_data) & _same(m["train_size"], main.train_size)]
    out = [f"Forgetting at matched learning on {task}: {str(g['note'].iloc[0])}." for task, g
           in m[m["forgetting"].isna()].groupby("forgetting_task")]
    m = m[m["forgetting"].notna()]
    for (task, seed), g in m.groupby(["forgetting_task", "seed"]):
        g = g.sort_values("forgetting")
        lo, hi = g.index[0], g.index[-1]
        note = " (the level is set by a method that learned little: only the start of training is compared)" \
            if str(g["note"].iloc[0] or "").strip() not in ("", "nan") else ""
        sep = c.tables.get("matched_between", pd.DataFrame())
        sep = sep[(sep["forgetting_task"] == task) & (sep["seed"] == seed) & (sep["model"] == main.model)
                  & (sep["train_data"] == main.train_data) & _same(sep["train_size"], main.train_size)] if not sep.empty else sep
        pairs = [f"{r['method']} vs {r['other']} ({c.verdict('matched_between', j)})"
                 for j, r in sep.iterrows() if _separated(r)] if not sep.empty else []
        steps = g["at_step"].astype(float)
        out.append(
            f"At matched learning (each curve taken where it first gains "
            f"{c.num('matched', lo, 'matched_learning', '.3f')} bits/byte on the target, seed "
            f"{c.num('matched', lo, 'seed', 'd')}, between training steps {c.num('matched', steps.idxmin(), 'at_step', '.2f')} "
            f"and {c.num('matched', steps.idxmax(), 'at_step', '.2f')}, interpolated linearly between the curve's "
            f"measured steps), forgetting on {task} ranged from {g.loc[lo, 'method']} "
            f"{c.interval('matched', lo, column='forgetting')} to {g.loc[hi, 'method']} "
            f"{c.interval('matched', hi, column='forgetting')} bits/byte; "
            + (("between methods: " + ", ".join(pairs) if pairs else
                "between methods, no pair differs detectably (each pair is a row of the verdicts table)")
               if len(sep) else "no pair of methods tested")
            + f"{note}.")
    return out


def _factor(c: Citations, factor: str, words: str, main: Condition) -> list[str]:
    """Sentences for one changed factor from `contrasts`: per method, the change of its effect
    on each task when the factor moves away from the main condition."""
    k = c.tables["contrasts"]
    if k.empty or factor not in set(k["factor"]):
        return [f"The grid does not vary the {words}, so it cannot say how the answer depends on it."]
    k = k[(k["factor"] == factor) & _same(k["from"], getattr(main, factor))]
    out = []
    agg = c.tables["aggregated"]
    for (to, method), g in k.groupby(["to", "method"], sort=False):
        replays = set() if factor != "train_data" else {
            t for x in agg.loc[_same(agg["train_data"], to), "replayed_nll"].dropna() for t in str(x).split(",")}
        parts = _listing(c, "contrasts", g, "task", "no change on", lambda r: _fmt(r["metric"]), direction=True,
                         extra=lambda i, r: f"; {to} replays its source data" if r["task"] in replays else "")
        i0 = g.index[0]
        failed = [f"with {words} {c.num('contrasts', i0, end, '')}" for _, end in _not_learning(c, g.loc[i0])]
        warn = (f"; it showed no detectable gain on its own target {' and '.join(failed)}, so its change here may be "
                "a failure to train rather than the factor's effect" if failed else "")
        out.append(f"{method}, {words} {c.num('contrasts', i0, 'from', '')} → {c.num('contrasts', i0, 'to', '')} "
                   f"({c.num('contrasts', i0, 'seeds', 'd')} seed(s){warn}), change in its effect vs its reference: "
                   + parts + ".")
    return out or [f"No pair of runs differs from the main condition in {words} alone."]


def _reverses(c: Citations, row, factor: str, main: Condition) -> bool:
    """The order of two methods on a task reverses when the factor moves: each condition's
    own paired test of the two (`contrasts`, factor method) separates them, in opposite
    directions, the change of their gap is separated too, and both methods learned their
    target in both conditions (else an untrained run, not a method, is what moved)."""
    k = c.tables["contrasts"]
    pair = {m.strip() for m in str(row["method"]).split(" - ")}
    if not _separated(row):  # a side that did not learn its target makes the row "cannot be told"
        return False

    def gap(condition):
        g = k[(k["factor"] == "method") & (k["task"] == row["task"]) & k["from"].isin(pair) & k["to"].isin(pair)]
        for key, value in zip(CONDITION, condition):
            g = g[_same(g[key], value)]
        return g.iloc[0] if len(g) and _separated(g.iloc[0]) else None

    a, b = gap(main), gap(_condition(main, factor, row["to"]))
    return a is not None and b is not None and a["mean_diff"] * b["mean_diff"] < 0


def _interaction(c: Citations, factor: str, words: str, main: Condition) -> list[str]:
    """Does the factor change the answer? From `contrasts` rows "method x <factor>": the gap
    between two methods (each against its own reference) under the main condition and under
    the other value, and the change of that gap with its interval."""
    k = c.tables["contrasts"]
    if k.empty:
        return []
    k = k[(k["factor"] == f"method x {factor}") & _same(k["from"], getattr(main, factor))]
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
                     f"{c.num('contrasts', i0, end, '')}" for m, end in _not_learning(c, g.loc[i0])]
        warn = (f"; {c.verdict('contrasts', i0)}, not a comparison of two methods shown to learn: {'; '.join(untrained)}"
                if untrained else "")
        out.append(f"The gap {pair} (difference of their changes) with {words} {c.num('contrasts', i0, 'from', '')} "
                   f"→ {c.num('contrasts', i0, 'to', '')} ({c.num('contrasts', i0, 'seeds', 'd')} seed(s){warn}): "
                   + "; ".join(parts) + ".")
    return out


def _condition(main: Condition, factor: str, value) -> Condition:
    """The main condition with one factor moved to `value`."""
    return main._replace(**{factor: value})


def _did_not_learn(c: Citations, condition: tuple, method: str):
    """The `aggregated` row of `method`'s change on its own training target in `condition`
    when that is no improvement (`verdicts.learned_target`); else None."""
    if verdicts.learned_target(c.tables["aggregated"], condition, method) is False:
        return verdicts.target_row(c.tables["aggregated"], condition, method)
    return None


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


def _not_learning(c: Citations, r) -> list[tuple[str, str]]:
    """(method, "from"/"to") for each method of a contrasts row that showed no detectable gain
    on its own target at that end of the factor (`verdicts.untrained_sides`)."""
    return verdicts.untrained_sides(c.tables["aggregated"], r)


def _untrained(c: Citations, r, factor: str, main: Condition, where: str) -> str:
    """Why an interaction row compares no two trained methods: each method that showed no
    detectable gain on its own target in either condition, with its change (and divergence);
    '' when both learned."""
    out = []
    for m, end in _not_learning(c, r):
        condition = _condition(main, factor, r[end])
        i = _did_not_learn(c, condition, m)
        row = c.tables["aggregated"].loc[i]
        place = where.format(c.num("contrasts", r.name, end, ""))
        out.append(f"{m} showed no detectable gain on its target {row['task']} {place} (change "
                   f"{c.interval('aggregated', i)}{_tag(row, c, 'aggregated', i, inline=True)}"
                   f"{_diverged(c, condition, m)})")
    return "; ".join(out)


def _lead_factor(c: Citations, factor: str, words: str, main: Condition, where: str) -> str:
    """Does the factor change the answer: the change of the gap between two methods on the
    main condition's target task (from `contrasts`, "method x <factor>"). No verdict when a
    method showed no gain on its own target in either condition; with fewer seeds than its
    sides have, a change within training noise is said so."""
    k = c.tables["contrasts"]
    agg = c.tables["aggregated"]
    target = agg["target_nll"].dropna().iloc[0] if not agg.empty and agg["target_nll"].notna().any() else None
    k = k[(k["factor"] == f"method x {factor}") & (k["task"] == target)
          & _same(k["from"], getattr(main, factor))] if not k.empty else k
    if k.empty:
        return (f"No pair of methods ran under a second {words}, so whether it changes which method "
                "learns most is not measured.")
    parts = []
    for i, r in k.iterrows():
        first, second = (m.strip() for m in str(r["method"]).split(" - "))
        failed = _untrained(c, r, factor, main, where)
        word = {SEPARATED: "yes", SINGLE_SEED: "single seed",
                CANNOT_TELL: "cannot be told"}.get(r["verdict"], "not detectably")
        head = (f"For {first} and {second} on {target} (seeds: {c.num('contrasts', i, 'seeds', 'd')}), "
                f"{c.verdict('contrasts', i, word)}: {first}'s change minus {second}'s, each vs its own reference, moved from "
                f"{c.num('contrasts', i, 'change_from')} to {c.num('contrasts', i, 'change_to')} bits/byte "
                f"{where.format(c.num('contrasts', i, 'to', ''))} (change {c.interval('contrasts', i)}"
                f"{_tag(r, c, 'contrasts', i, inline=True)})")
        head += _detectable_gap(c, r)
        if failed:
            head += (f", but {failed}, so the gap compares a method shown to learn with one not shown to "
                     "(at these seeds, after Holm's correction); it needs a learning rate, or the seeds, that "
                     "show both learning")
        elif _reverses(c, r, factor, main):
            head += ", and the two methods change places: each side's own test separates them"
        parts.append(head)
    return ". ".join(parts) + "."


def _detectable_gap(c: Citations, r) -> str:
    """'; a change of the gap smaller than about X ... would likely not be detected' for a
    factor's change of the gap between two methods (`detectable`, comparison "method x ...")."""
    m = c.tables["detectable"]
    if m.empty or "from" not in m:
        return ""
    m = m[(m["comparison"] == r["factor"]) & (m["method"] == r["method"]) & (m["task"] == r["task"])
          & _same(m["from"], r["from"]) & _same(m["to"], r["to"])]
    if m.empty or pd.isna(m["mde"].iloc[0]):
        return ""
    j = m.index[0]
    return (f"; a change of the gap smaller than about {c.num('detectable', j, 'mde', _fmt(r['metric']).lstrip('+'))} "
            f"{_unit(r['metric'])} would likely not be detected (training randomness {_randomness(m.loc[j])})")


def q3(c: Citations, main: Condition) -> list[str]:
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
    for model in sorted(set(k[k["factor"] == "model"]["to"].dropna().astype(str)) - {str(main.model)}):
        out[0] += _rate_edges(c, model)
    return out + _factor(c, "model", "base model", main) + _interaction(c, "model", "base model", main)


def _rate_edges(c: Citations, model: str) -> str:
    """' X's rate on M, R, is the smallest its sweep tried ...': each method whose rate on this
    model was chosen at an edge of its sweep (extensions included; `views.tuning_summary`
    decides, as for the rates sentence), so the comparison on that model may not be at the
    method's best rate (the rate cited from the `tuning` table)."""
    trials = c.tables.get("tuning", pd.DataFrame())
    if trials.empty:
        return ""
    out = []
    for _, s in views.tuning_summary(trials[trials["model"] == model]).iterrows():
        chosen = trials[(trials["model"] == model) & (trials["method"] == s["method"]) & trials["selected"].astype(bool)]
        if s["edge"] and len(chosen):
            out.append(f" {s['method']}'s rate on {model}, {c.num('tuning', chosen.index[0], 'learning_rate', '.3g')}, "
                       f"is the {s['edge']} its sweep tried (extensions included), so its best rate there may lie "
                       f"{'below' if s['edge'] == 'smallest' else 'above'} it.")
    return "".join(out)


def q4(c: Citations, main: Condition) -> list[str]:
    words = "training examples"
    if c.tables["contrasts"].empty or "train_size" not in set(c.tables["contrasts"]["factor"]):
        return _factor(c, "train_size", words, main)
    return ([_lead_factor(c, "train_size", words, main, "with {} examples") + _size_budgets(c, main)]
            + _factor(c, "train_size", words, main) + _interaction(c, "train_size", words, main))


def _size_budgets(c: Citations, main: Condition) -> str:
    """' Sizes compared: ...': each training size's optimiser steps beside the main condition's,
    so that a size change reads as one at equal steps (the smaller set repeated: only the data
    changes) or at equal epochs (more steps too), from the runs' recorded steps."""
    runs = c.tables.get("runs", pd.DataFrame())
    if runs.empty or "steps" not in runs:
        return ""
    sel = runs[(runs["status"] == "done") & (runs["model"] == main.model) & (runs["train_data"] == main.train_data)
               & ~runs["method"].isin(REFERENCES) & ~runs["control"].fillna(False).astype(bool)].dropna(subset=["steps"])
    first = sel.drop_duplicates("train_size").sort_values("train_size")
    if len(first) < 2 or main.train_size not in set(first["train_size"]):
        return ""
    if (sel.groupby("train_size")["steps"].nunique() > 1).any():
        return " The runs of one size differ in their steps (see runs.csv)."
    base = first[first["train_size"] == main.train_size].iloc[0]
    parts = []
    for i, r in first.iterrows():
        what = (" (the main condition)" if r["train_size"] == main.train_size else
                ": equal steps, each example seen more often, so only the data changes" if r["steps"] == base["steps"]
                else ": equal epochs, so the steps change with the data"
                if np.isclose(r["steps"] / r["train_size"], base["steps"] / base["train_size"]) else "")
        parts.append(f"{c.num('runs', i, 'train_size', 'd')} examples in {c.num('runs', i, 'steps', 'd')} steps{what}")
    return " Sizes compared, batch and learning rate fixed: " + "; ".join(parts) + "."


def build(tables: dict[str, pd.DataFrame]) -> tuple[dict[str, list[str]], Citations]:
    """The answers per question (markdown sentences) and their citations."""
    tables = dict(tables)
    tables.setdefault("detectable", detectable.detectable(tables["aggregated"], tables.get("contrasts")))
    for name in ("contrasts", "runs", "matched", "matched_between"):
        tables.setdefault(name, pd.DataFrame())
    c = Citations(verdicts.annotate(tables))
    main = main_condition(tables["aggregated"], tables.get("contrasts"))
    if main is None:
        return {q: ["No fine-tuned run has finished, so there is no answer yet."] for q in QUESTIONS}, c
    return {"q1": q1(c, main), "q2": q2(c, main), "q3": q3(c, main), "q4": q4(c, main)}, c


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


def rates_source(params, trials: pd.DataFrame | None = None) -> str:
    """Where the study's learning rates came from, in one sentence: its own sweep (`tuning`;
    from its `trials`, which rates are bracketed and which sit at an edge, the best rate then
    possibly beyond), another study's sweep named by `learning_rates_from` (each rate checked
    against what that sweep chose), or the params file alone."""
    from ftstudy.analysis import tables
    from ftstudy.config import params as params_mod
    from ftstudy.planning import tuning
    from ftstudy.record import export

    if params.tuning is not None:
        n = len(next(iter(tuning.rates(params).values())))
        t = params.tuning
        where = ("one sweep per model and method, in its main condition, whose rate every other condition of "
                 "the method on that model trains at" if t.per == "method" else "a sweep per condition")
        if t.seed is not None:
            where += f", every trial trained with seed {t.seed}" + (
                " (not a seed of the study's runs, so none of them is the training the selection favoured)"
                if t.seed not in params.seeds else "")
        extend = (f", extended past an edge one step at a time (the ratio of the two outermost rates) while the "
                  f"best rate sat there, at most {t.extend} time{'s' if t.extend != 1 else ''}" if t.extend else "")
        text = (f"Learning rates: chosen by this study's own sweep ({where}; {n} trials per method{extend}; "
                f"scored on {'validation rows' if t.validation_limit is None else f'{t.validation_limit} validation rows'}"
                f"{' of one seed' if t.seed is not None else ''}, so a bracket is a point estimate, not a test; "
                "the results page's Learning rates section shows every trial).")
        summary = views.tuning_summary(trials) if trials is not None and not trials.empty else pd.DataFrame()
        if summary.empty:
            return text
        label = lambda r: r["method"] + (f" on {r['model']}" if summary["model"].nunique() > 1 else "")
        counts = summary["trials"].astype(int)
        if counts.nunique() > 1:
            text += (" Trials per method: " + ", ".join(f"{label(r)} {int(r['trials'])}" for _, r in summary.iterrows())
                     + " (an extension gives a method more trials than the others).")
        inside = [label(r) for _, r in summary.iterrows() if not r["edge"] and pd.notna(r["chosen_rate"])]
        edge = [f"{label(r)} ({r['edge']} of {int(r['trials'])} rates)" for _, r in summary.iterrows() if r["edge"]]
        return (text + (f" Bracketed (the best rate inside the range tried): {', '.join(inside)}." if inside else "")
                + (f" At an edge of the range tried, so the best rate may lie beyond it: {', '.join(edge)}."
                   if edge else ""))
    if params.learning_rates_from is None:
        return ("Learning rates: configured by hand in the params file, not tuned by any sweep, so a ranking of "
                "methods may reflect those rates as much as the methods.")
    folder = params_mod.rates_folder(params)
    sweep = params_mod.load(export.params_file(folder), for_compute=False)
    swept = tuning.table(tables.run_records(folder), tuning.configured_rates(sweep))
    chosen = swept[swept["selected"].astype(bool)] if not swept.empty else swept
    own = tuning.configured_rates(params)
    where = ", ".join(f"{chosen[k].iloc[0]}" for k in ("model", "train_data") if k in chosen and len(chosen))
    parts, differ = [], []
    for method, rate in own.items():
        c = chosen[chosen["method"] == method]["learning_rate"]
        if c.empty:
            differ.append(f"{method} (not in that sweep)")
            continue
        parts.append(f"{method} {rate:.3g}")
        if not np.isclose(c.iloc[0], rate, rtol=1e-3):
            differ.append(f"{method} (the sweep chose {c.iloc[0]:.3g})")
    summary = views.tuning_summary(swept) if not swept.empty else pd.DataFrame()
    edge = [f"{r['method']} ({r['edge']})" for _, r in summary.iterrows() if r.get("edge")] if len(summary) else []
    return (f"Learning rates: from the sweep in `{params.learning_rates_from}` (params `learning_rates_from`; "
            f"swept on {where}): {', '.join(parts)}. "
            + (f"These differ from what that sweep chose: {', '.join(differ)}. " if differ else
               "Each is the rate that sweep chose. ")
            + (f"At the edge of the range it tried, so the best rate may lie beyond: {', '.join(edge)}." if edge else "")
            ).strip()


# What the answers rest on, beside them on the results page: warnings about the reference
# models' answers, what each comparison held equal, and what the learning-rate sweep chose.

def warnings(baselines: pd.DataFrame, threshold: float = 0.6) -> list[str]:
    """Warn where a reference model puts most answers of a multiple-choice task on one
    choice, and count the fine-tuned runs that do the same."""
    if baselines.empty:
        return []
    out = []
    skewed = baselines[baselines["top_answer_share"] >= threshold]
    for _, r in skewed[skewed["method"].isin(REFERENCES)].iterrows():
        out.append(f"⚠ {r['model']} {r['method']} on {r['task']}: {100 * r['top_answer_share']:.0f}% of "
                   f"answers are choice {'ABCD'[int(r['top_answer'])]} (chance {r['chance']:.2f}, "
                   f"majority baseline {r['majority_baseline']:.2f}); its accuracy says little about knowledge.")
    tuned = baselines[~baselines["method"].isin(REFERENCES)]
    for task, g in skewed[~skewed["method"].isin(REFERENCES)].groupby("task"):
        out.append(f"⚠ {len(g)} of {int((tuned['task'] == task).sum())} fine-tuned runs also put at least "
                   f"{100 * threshold:.0f}% of their {task} answers on one choice "
                   f"({', '.join(sorted(set(g['method'])))}).")
    return out


def tuning_lines(summary: pd.DataFrame, pairs: pd.DataFrame | None = None) -> list[str]:
    """What this study's learning-rate sweep chose, and whether tuning changed the order of
    methods on the validation rows: an order is said to reverse only where a pair's paired
    difference is separated (`verdicts.decide`) at both the configured and the chosen rates,
    with opposite signs. Empty without a sweep (`rates_source` says where rates came from)."""
    if summary.empty:
        return []
    lines = []
    models = summary["model"].nunique()
    for (model, label, size, seed), g in summary.groupby(["model", "train_data", "train_size", "seed"], dropna=False):
        counts = sorted(set(g["trials"].astype(int)))
        head = (_trained_on(model, models, label, size) + f", seed {_seed(seed)}), "
                + (f"{counts[0]} trials per method" if len(counts) == 1 else
                   f"{counts[0]}-{counts[-1]} trials per method (the sweep extends past an edge)"))
        chosen = "; ".join(f"{r['method']} {r['chosen_rate']:.3g}" + (f" (configured {r['default_rate']:.3g})"
                           if not np.isclose(r["chosen_rate"], r["default_rate"], rtol=1e-3) else " (its default)")
                           for _, r in g.iterrows())
        lines.append(f"{head}: chosen rates {chosen}.")
        edge = g[g["edge"] != ""]
        if len(edge):
            lines.append("At the edge of the range tried (the best rate may lie beyond it): " + ", ".join(
                f"{r['method']} ({r['edge']})" for _, r in edge.iterrows()) + ".")
        both = g.dropna(subset=["validation_bpb", "validation_bpb_default"])
        if len(both) >= 2:
            before = " < ".join(both.sort_values("validation_bpb_default")["method"])
            after = " < ".join(both.sort_values("validation_bpb")["method"])
            line = (f"Validation bits/byte, best first, at the configured rates: {before}; at the chosen rates: "
                    f"{after} (" + ("the same order" if before == after else "the order of point estimates changed")
                    + "; a chosen rate's score is the best of its trials on the items that chose it, so it is "
                    "optimistic; these are absolute scores, not changes against each method's own reference, "
                    "which for QLoRA is the 4-bit base).")
            flips = _flips(pairs, model, label, size, seed)
            one_seed = pairs is not None and not pairs.empty and pairs.get("seeds", pd.Series([1])).fillna(1).max() < 2
            if one_seed:
                line += (" Each trial ran one seed, so whether tuning reversed an order beyond training randomness "
                         "is not tested.")
            elif pairs is not None and not pairs.empty:
                line += (" Orders that tuning reversed, the paired test (sign-flip on the validation items, "
                         "Holm) rejecting equality at both rates: " + "; ".join(flips) + "." if flips else
                         " No pair of methods reversed its order with the paired test (sign-flip on the "
                         "validation items, Holm) rejecting equality at both rates.")
            lines.append(line)
        if (g["failed"] > 0).any():
            lines.append("Failed trials (a diverged rate loses): " + ", ".join(
                f"{r['method']} {int(r['failed'])}" for _, r in g[g["failed"] > 0].iterrows()) + ".")
    return lines


def _trained_on(model, models: int, label, size) -> str:
    """'Trained on **gsm8k** (n=24' (the model named first when the grid has several)."""
    return (f"{model}, t" if models > 1 else "T") + f"rained on **{label}** (n={int(size)}"


def _seed(seed) -> str:
    return str(int(seed)) if pd.notna(seed) else "-"


def _flips(pairs, model, label, size, seed) -> list[str]:
    """Pairs whose paired validation difference is separated (`verdicts.decide`) at both the configured
    and the chosen rates, with opposite signs."""
    if pairs is None or pairs.empty:
        return []
    p = pairs[(pairs["model"] == model) & (pairs["train_data"] == label) & (pairs["train_size"] == size)
              & (pairs["seed"] == seed)]
    out = []
    for (a, b), g in p.groupby(["method", "other"]):
        d, c = g[g["rates"] == "default"], g[g["rates"] == "chosen"]
        if len(d) and len(c) and _separated_row(d.iloc[0]) and _separated_row(c.iloc[0]) \
                and np.sign(d["difference"].iloc[0]) != np.sign(c["difference"].iloc[0]):
            first, second = (a, b) if d["difference"].iloc[0] < 0 else (b, a)
            out.append(f"{first} ahead of {second} at the configured rates, behind at the chosen ones")
    return out


def _separated_row(row) -> bool:
    return verdicts.decide(row)[0] == SEPARATED


def budget(runs: pd.DataFrame, rates: str) -> list[str]:
    """What every comparison held equal across methods, and what it did not; `rates`: where the
    learning rates came from (`rates_source`)."""
    trained = runs[(runs["status"] == "done") & ~runs["method"].isin(REFERENCES)
                   & ~runs["control"].fillna(False).astype(bool)]
    if trained.empty:
        return []
    lines = []
    models = trained["model"].nunique()
    for (model, label, size), g in trained.groupby(["model", "train_data", "train_size"]):
        steps = sorted(set(g["steps"].dropna().astype(int)))
        equal = (f"{', '.join(map(str, steps))} optimizer steps" + (" (differs by method!)" if len(steps) > 1 else "")
                 + f", the same {int(size)} examples in the same seeded order per seed")
        tokens = g.groupby("seed", dropna=False)["train_tokens"].nunique()
        same_tokens = bool(len(tokens)) and bool((tokens <= 1).all())
        equal += (", the same prompt and answer tokens" if same_tokens else
                  "; tokens seen differ between methods (see runs.csv)")
        lines.append(_trained_on(model, models, label, size) + f"): held equal: {equal}. Not held equal: "
                     f"wall time ({g['train_wall_s'].min():.0f}-{g['train_wall_s'].max():.0f} s of training), "
                     f"peak memory in training ({views.peak_memory(g).min():.0f}-{views.peak_memory(g).max():.0f} MiB), trainable "
                     f"parameters ({int(g['trainable_params'].min()):,}-{int(g['trainable_params'].max()):,}).")
    return lines + ([rates] if lines else [])
