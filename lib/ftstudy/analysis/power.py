"""The power planner: how many items and seeds a study needs to detect a given change.

Each comparison's per-item differences are modelled as seeds crossed with items (every run
scores the same items): d[s, i] = change + seed effect + item effect + residual. The variances
of the three come from a pilot's or a committed study's `aggregated` table (`seed_var`,
`item_var`, `resid_var`, estimated per comparison by `stats.crossed`); the verdict's test is
the crossed t test with Satterthwaite's degrees of freedom, so power is estimated by
simulating that very test (`power`), starting from the normal approximation (`mde`), at the
level Holm's correction needs for the study's family of comparisons (Bonferroni's alpha/m, the
level Holm's first step uses: conservative). A single seed never separates a change, and at two
seeds the crossed interval undercovers (about 90% in simulation), so plans start at three.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from ftstudy.analysis import stats

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 10
MIN_SEEDS = 3
# Which comparisons answer which question (see `answers.QUESTIONS`), and where their
# variances are read: a change vs the reference, or a factor's change of that change.
QUESTIONS = {"q1": ("aggregated", "target"), "q2": ("aggregated", "other"),
             "q3": ("contrasts", "method x model"), "q4": ("contrasts", "method x train_size")}
# A factor's change of the gap between two methods involves four runs per seed.
RUNS_PER_SEED = {"aggregated": 1, "contrasts": 4}


def variances(aggregated: pd.DataFrame, contrasts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per question and task (its verdict metric): the median over comparisons of the seed,
    item and residual variances, and how many comparisons had several seeds to estimate the
    seed variance from (none: the seed variance of the question's other tasks, else unknown)."""
    rows = []
    frames = {"aggregated": aggregated, "contrasts": contrasts if contrasts is not None else pd.DataFrame()}
    for q, (table, which) in QUESTIONS.items():
        df = frames[table]
        if df.empty or "item_var" not in df:
            continue
        if table == "aggregated":
            df = df[(df["comparison"] == "vs base") & df["headline"].astype(bool)]
            df = df[(df["task"] == df["target_nll"]) if which == "target" else (df["task"] != df["target_nll"])]
        else:
            df = df[df["factor"] == which]
        for task, g in df.groupby("task"):
            seeded = g[g["seeds"] >= 2]  # their item variance excludes the residual; one seed's includes it
            rows.append(dict(question=q, task=task, metric=g["metric"].iloc[0], comparisons=len(g),
                             runs_per_seed=RUNS_PER_SEED[table], seeded=len(seeded),
                             item_var=float((seeded if len(seeded) else g)["item_var"].median()),
                             resid_var=float(seeded["resid_var"].median()) if len(seeded) else 0.0,
                             seed_var=float(seeded["seed_var"].median()) if len(seeded) else np.nan))
    out = pd.DataFrame(rows)
    if not out.empty:  # a question with no seeded comparison borrows a run's seed variance on its task,
        # once per run its comparison involves
        known = out.dropna(subset=["seed_var"])
        pooled = (known["seed_var"] / known["runs_per_seed"]).groupby(known["task"]).median()
        out["seed_var_from"] = np.where(out["seed_var"].notna(), "this question", "")
        missing = out["seed_var"].isna() & out["task"].isin(pooled.index)
        out.loc[missing, "seed_var"] = out.loc[missing, "task"].map(pooled) * out.loc[missing, "runs_per_seed"]
        out.loc[missing, "seed_var_from"] = "another question's seeds on this task, per run"
    return out


def mde(seed_var: float, item_var: float, resid_var: float, n: int, seeds: int, alpha: float = ALPHA) -> float:
    """The change detected with 80% power at a two-sided 5% level by the crossed t test on n
    items and `seeds` seeds, from the expected mean squares (Satterthwaite's degrees of freedom)."""
    ms_s = resid_var + n * seed_var
    ms_i = resid_var + seeds * item_var
    num, df = (float(x) for x in stats.satterthwaite(ms_s, ms_i, resid_var, seeds, n))
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(POWER, df)) * np.sqrt(num / (seeds * n)))


def power(change: float, seed_var: float, item_var: float, resid_var: float, n: int, seeds: int,
          reps: int = 2000, seed: int = 0, alpha: float = ALPHA) -> float:
    """The share of simulated studies (seeds x items with these variances and this true change)
    in which the verdict's test (`stats.crossed`) rejects no change at `alpha`."""
    rng = np.random.default_rng(seed)
    d = (change + rng.normal(0, np.sqrt(max(seed_var, 0)), (reps, seeds, 1))
         + rng.normal(0, np.sqrt(max(item_var, 0)), (reps, 1, n))
         + rng.normal(0, np.sqrt(max(resid_var, 0)), (reps, seeds, n)))
    mean, se, df = stats.crossed_batch(d)
    return float((2 * sps.t.sf(np.abs(mean / se), df) < alpha).mean())


def items_needed(change: float, seed_var: float, item_var: float, resid_var: float, seeds: int,
                 pool: int | None, alpha: float = ALPHA) -> int | None:
    """The fewest items (at most the task's `pool`) with which `seeds` seeds detect `change`
    with 80% simulated power; None when even the whole pool does not."""
    top = pool or 100_000
    if mde(seed_var, item_var, resid_var, top, seeds, alpha) > change * 1.15:  # far out of reach
        return None
    lo, hi = 2, top
    while hi - lo > max(1, lo // 50):  # the smallest n the normal approximation allows, then simulate
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mde(seed_var, item_var, resid_var, mid, seeds, alpha) <= change else (mid, hi)
    n = hi
    while power(change, seed_var, item_var, resid_var, n, seeds, alpha=alpha) < POWER:
        if n >= top:
            return None
        n = min(top, int(n * 1.1) + 1)
    return n


def plan(var: pd.DataFrame, changes: dict[str, float], pools: dict[str, int], max_seeds: int = MAX_SEEDS,
         alpha: float = ALPHA) -> pd.DataFrame:
    """Per question, task and number of seeds (3 to `max_seeds`): the items needed to detect the
    task's change in `changes` (by task, or by metric) with 80% power at `alpha`, within its pool."""
    rows = []
    for _, r in var.iterrows():
        change = changes.get(r["task"], changes.get(r["metric"]))
        if change is None or pd.isna(r["seed_var"]):
            continue
        for seeds in range(MIN_SEEDS, max_seeds + 1):
            n = items_needed(change, r["seed_var"], r["item_var"], r["resid_var"], seeds, pools.get(r["task"]), alpha)
            rows.append(dict(question=r["question"], task=r["task"], metric=r["metric"], change=change,
                             seeds=seeds, items=n, pool=pools.get(r["task"]),
                             power=None if n is None else power(change, r["seed_var"], r["item_var"],
                                                               r["resid_var"], n, seeds, alpha=alpha)))
    return pd.DataFrame(rows)


def against_plan(pilot: pd.DataFrame, detectable: pd.DataFrame, aggregated: pd.DataFrame,
                 main: tuple, contrasts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per question and task: the change this study could detect (80% power, two-sided 5%,
    before Holm, training randomness included) as achieved (`detectable`: the median method
    against its reference in the `main` (model, data, size) condition on each task's verdict
    metric, or a factor's change, away from the main condition, of the gap between two methods)
    and as the planner predicted it (`mde` with the `pilot` study's variances, from
    `variances`, for the same question, task and metric, at the items and seeds this study's
    comparison had), with the seed, item and residual variances behind each, which say why the
    two differ: the pilot's (medians over the question's comparisons) and this study's own for
    the very comparison (medians over the main condition's methods; a factor's change of the
    gap: its row of `contrasts`)."""
    if detectable.empty or aggregated.empty:
        return pd.DataFrame()
    model, label, size = main
    here = aggregated[(aggregated["comparison"] == "vs base") & aggregated["headline"].astype(bool)
                      & (aggregated["model"] == model) & (aggregated["train_data"] == label)
                      & (aggregated["train_size"] == size)]
    targets = set(here["target_nll"].dropna())
    verdict_metric = set(zip(here["task"], here["metric"]))
    start = {"method x model": model, "method x train_size": size}
    rows = []
    for q, (table, which) in QUESTIONS.items():
        if table == "aggregated":
            d = detectable[(detectable["comparison"] == "vs base") & (detectable["model"] == model)
                           & (detectable["train_data"] == label) & (detectable["train_size"] == size)]
            d = d[d["task"].isin(targets) == (which == "target")]
            d = d[[(t, m) in verdict_metric for t, m in zip(d["task"], d["metric"])]]
        else:
            d = detectable[(detectable["comparison"] == which)
                           & (detectable["from"].astype(str) == str(start[which]))]
        for _, r in d.iterrows():
            v, planned_metric = _pilot_row(pilot, q, r["task"], r["metric"])
            seeds, n = int(r["seeds"]) if pd.notna(r["seeds"]) else 1, int(r["n"])
            mine = _own_variances(here if table == "aggregated" else contrasts, r,
                                  None if table == "aggregated" else (which, start[which]))
            planned = (mde(v["seed_var"], v["item_var"], v["resid_var"], n, seeds)
                       if v is not None and pd.notna(v["seed_var"]) else np.nan)
            rows.append(dict(question=q, task=r["task"], metric=r["metric"],
                             to=r.get("to") if table != "aggregated" else None,
                             items=n, seeds=seeds, planned=planned, planned_metric=planned_metric,
                             **{f"pilot_{k}": v[k] if v is not None else np.nan for k in mine}, **mine,
                             achieved=r["mde"], achieved_max=r["mde_max"],
                             training_randomness=r["training_randomness"]))
    return pd.DataFrame(rows, columns=["question", "task", "metric", "to", "items", "seeds", "planned",
                                       "planned_metric", "pilot_seed_var", "pilot_item_var", "pilot_resid_var", "seed_var",
                                       "item_var", "resid_var",
                                       "achieved", "achieved_max", "training_randomness"])


def _own_variances(table: pd.DataFrame | None, r, factor: tuple | None) -> dict:
    """The seed, item and residual variances behind one achieved detectable change `r`: the
    median over `table`'s seeded rows on its task and metric (the main condition's methods
    against their reference), or, with `factor` (its name, its first value), that factor's
    contrast row to `r`'s value."""
    keys = ("seed_var", "item_var", "resid_var")
    if table is None or table.empty or not set(keys) <= set(table):
        return dict.fromkeys(keys, np.nan)
    rows = table[(table["task"] == r["task"]) & (table["metric"] == r["metric"]) & (table["seeds"] >= 2)]
    if factor is not None:
        rows = rows[(rows["factor"] == factor[0]) & (rows["from"].astype(str) == str(factor[1]))
                    & (rows["to"].astype(str) == str(r["to"]))]
    return {k: float(rows[k].median()) if len(rows) else np.nan for k in keys}


def _pilot_row(pilot: pd.DataFrame, question: str, task: str, metric: str):
    """The pilot's variances (its `variances` table) for a question's task on this metric, or,
    where the pilot's runs predate it, on the metric it
    refines (GSM8K's working without its annotation format was scored as the whole answer's
    bits/byte: the same unit, the closest measure the pilot had; never an accuracy for a
    continuous score). Returns the row and the metric it was read on."""
    if pilot.empty:
        return None, None
    from ftstudy.analysis import measures

    with_format = {w: m for m, w in measures.WITHOUT_FORMAT.items()}
    for m in (metric, with_format.get(metric)):
        v = pilot[(pilot["question"] == question) & (pilot["task"] == task) & (pilot["metric"] == m)]
        if m is not None and len(v):
            return v.iloc[0], m
    return None, None


def pool_sizes(tasks, data_dir=None) -> dict[str, int]:
    """How many items each task has to draw from (its test split; a held-out task's rows)."""
    from ftstudy.compute import data

    splits = {"hellaswag": ("hellaswag", "validation"), "gsm8k": ("gsm8k", "test")}
    out = {}
    for task in tasks:
        if task in data.HELDOUT_TASKS:
            out[task] = len(data.heldout_pairs(task, data_dir))
        elif task.startswith("mmlu_"):
            out[task] = len(data.load_records(task, "test", data_dir))
        elif task in splits:
            out[task] = len(data.load_records(*splits[task], data_dir))
    return out


def costs(runs: pd.DataFrame, items_per_run: int) -> dict:
    """Seconds per evaluated item and per trained run, from a finished study's runs (the CPU
    those ran on: its results' README says which)."""
    done = runs[runs["status"] == "done"]
    trained = done[done["train_wall_s"].notna() & (done["train_wall_s"] > 0)]
    return {"s_per_item": float(done["eval_wall_s"].median()) / max(items_per_run, 1),
            "train_s": float(trained["train_wall_s"].median()) if len(trained) else 0.0}


def report(p, results, changes: dict[str, float], max_seeds: int = MAX_SEEDS, data_dir=None) -> str:
    """The planner's answer as text: per question and task, the items needed at each number of
    seeds (the fewest seeds first), with the simulated power and what it costs to run."""
    from ftstudy.analysis import tables
    from ftstudy.planning import grid, tuning

    study = tables.collect(results, grid.expand(p, results), tuning.configured_rates(p))
    agg, k = study.aggregated, study.contrasts
    if agg.empty or "item_var" not in agg:
        raise ValueError(f"{results}: no finished comparison of {getattr(p, 'study', '')}'s grid to plan from")
    var = variances(agg, k)
    tasks = sorted(set(var["task"])) if not var.empty else []
    pools = pool_sizes(tasks, data_dir)
    runs = study.runs
    items_now = int(sum((t.limit or pools.get(name, 0)) for name, t in p.evaluation.tasks.items()))
    cost = costs(runs, items_now)
    methods = agg[(agg["comparison"] == "vs base")]["method"].nunique()
    family = int(((agg["comparison"] == "vs base") & agg["headline"].astype(bool)).sum())
    alpha = ALPHA / max(family, 1)
    lines = [f"Power plan from {results} ({len(runs)} runs): the items and seeds each question needs to detect "
             f"the given change with 80% power for the median method's variances (a noisier method needs more), "
             f"at a two-sided {alpha:.2g} level (5% over the {family} comparisons Holm corrects together: "
             "conservative), training randomness included; costs from that study's own run times "
             f"({cost['s_per_item']:.2f} s per evaluated item, {cost['train_s']:.0f} s per training run).", ""]
    table = plan(var, changes, pools, max_seeds, alpha)
    for (q, task), g in (table.groupby(["question", "task"], sort=False) if not table.empty else []):
        v = var[(var["question"] == q) & (var["task"] == task)].iloc[0]
        runs_per_seed = methods if v["runs_per_seed"] == 1 else v["runs_per_seed"]  # q3, q4: two methods, two conditions
        head = (f"{q} {task} ({v['metric']}): detect {g['change'].iloc[0]:g}; variances seed {v['seed_var']:.2g} "
                f"({v['seed_var_from']}), item {v['item_var']:.2g}, residual {v['resid_var']:.2g}")
        lines.append(head)
        for _, r in g.iterrows():
            if r["items"] is None or pd.isna(r["items"]):
                lines.append(f"  {r['seeds']:>2} seeds: not reachable within the {r['pool']} items this task has")
                continue
            trained = runs_per_seed * r["seeds"]
            minutes = ((trained + 1) * r["items"] * cost["s_per_item"] + trained * cost["train_s"]) / 60
            lines.append(f"  {r['seeds']:>2} seeds: {int(r['items']):>6} items (of {r['pool']}), simulated power "
                         f"{r['power']:.2f}; about {minutes:.0f} min for this task's {trained} trained runs "
                         "and its reference")
        lines.append("")
    skipped = sorted(set(var["task"]) - set(table["task"] if not table.empty else []))
    if skipped:
        lines.append("No change given (or no seed variance known) for: " + ", ".join(skipped)
                     + " (pass --change TASK=SIZE).")
    return "\n".join(lines)
