"""Answers in words, generated from the results tables (no sentence written by hand).

A difference is outside the noise when its paired test (exact McNemar for 0/1 metrics, a
sign-flip permutation test of the mean otherwise; with several seeds, on the per-item means
over seeds) rejects "no change" after Holm's correction within its family; each sentence
says what its interval covers and what the grid cannot answer.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ftstudy import analysis
from ftstudy.methods import REFERENCES

UNITS = {"bits_per_byte": "bits/byte"}


def _fmt(v: float, metric: str) -> str:
    if metric in UNITS:
        return f"{v:+.4f} {UNITS[metric]}"
    return f"{100 * v:+.1f} points"


def describe_difference(row: pd.Series) -> str:
    """One comparison as a sentence fragment: the raw change (in the metric's own
    direction), its 95% interval, the Holm-adjusted test and the verdict."""
    unit = row["metric"]
    lo, hi = row["ci_low"], row["ci_high"]
    verdict = "outside the noise" if row["significant"] else "inside the noise"
    if pd.isna(lo) and row["n"] >= 2 and row["mean_diff"] == 0:
        ci = " (no item changed)"
    elif pd.isna(lo) and row["n"] >= 2 and not pd.isna(row.get("p_value")):
        ci = " (no interval: every item changed by the same amount)"
    elif pd.isna(lo):
        verdict, ci = "too few items to tell", ""
    else:
        ci = f" (95% CI {_fmt(lo, unit)} to {_fmt(hi, unit)})"
    extra = ""
    if "gained" in row and not pd.isna(row.get("gained")):
        extra = f"; {int(row['gained'])} items gained, {int(row['lost'])} lost"
    if not pd.isna(row.get("p_adjusted")):
        extra += f"; {row['test']} p={row['p_value']:.2g}, Holm-adjusted {row['p_adjusted']:.2g}"
    replayed = str(row.get("replayed_nll") or "")
    if row["task"] in replayed.split(","):
        extra += f"; note: this run's training mix replays {row['task']}'s source data"
    return f"{row['method']} {_fmt(row['mean_diff'], unit)}{ci}, {verdict}{extra}"


def _coverage(g: pd.DataFrame) -> str:
    seeds = int(g["seeds"].max())
    if seeds == 1:
        return "one seed: the intervals cover item sampling only, not training randomness"
    return f"{seeds} seeds: means over seeds, intervals from a bootstrap over seeds then items"


def method_effects(paired: pd.DataFrame) -> list[str]:
    """Q1: per training set and task, each method's change vs its reference model."""
    vs = paired[paired["comparison"] == "vs base"] if not paired.empty else paired
    if vs.empty:
        return ["No fine-tuned run has finished, so there is nothing to compare yet."]
    df = analysis.improvement(vs)
    df = df[df["headline"].astype(bool)]
    controls = paired[(paired["comparison"] == "control") & paired["headline"].astype(bool)]
    shift = {(r["model"], r["method"], r["task"]): r["mean_diff"] for _, r in controls.iterrows()}
    lines = []
    models = df["model"].nunique()
    for (model, label, size, task), g in df.groupby(["model", "train_data", "train_size", "task"]):
        g = g.sort_values("gain", ascending=False)
        better = g[g["significant"] & (g["gain"] > 0)]["method"].tolist()
        worse = g[g["significant"] & (g["gain"] < 0)]["method"].tolist()
        metric = g["metric"].iloc[0]
        direction = "lower is better" if metric in analysis.LOWER_IS_BETTER else "higher is better"
        head = (_trained_on(model, models, label, size) + f"), on **{task}** ({metric}, {direction}, "
                f"{int(g['n'].max())} items; {_coverage(g)}): ")
        if better or worse:
            verdict = []
            if better:
                verdict.append("better than the reference model: " + ", ".join(better))
            if worse:
                verdict.append("worse: " + ", ".join(worse))
            head += "; ".join(verdict) + ". "
        else:
            head += "no method differs from its reference model beyond the noise. "
        parts = []
        for _, r in g.iterrows():
            text = describe_difference(r)
            at_zero = shift.get((r["model"], r["method"], r["task"]))
            if at_zero is not None and at_zero != 0:  # not an identity at initialisation
                text += f"; at 0 steps (its control, one initialisation) already {_fmt(at_zero, r['metric'])}"
            parts.append(text)
        lines.append(head + "Changes: " + "; ".join(parts) + ".")
    return lines


def tradeoffs(lf: pd.DataFrame, axes: str, paired: pd.DataFrame | None = None) -> list[str]:
    """Q2: learning vs forgetting per (model, training set, size), with the Pareto-optimal
    methods. A method is named as learning most (or forgetting least) only where the paired
    between-method test separates it from the runner-up; else the sentence says it is not."""
    if lf.empty:
        return [f"The grid has no runs with both a target and a retention task on {axes} axes."]
    lines = []
    models = lf["model"].nunique()
    for (model, label, size), g in lf.groupby(analysis.PARETO_GROUP, dropna=False):
        front = ", ".join(g[g["pareto"]]["method"])
        learned = g[g["learned"]]["method"].tolist()
        forgot = [f"{r['method']} (on {r['forgot_on']})" for _, r in g[g["forgot_on"] != ""].iterrows()]
        head = _trained_on(model, models, label, size) + "; target "
        head += f"{g['target'].iloc[0]}, retention {g['retention_tasks'].iloc[0]}"
        if g["replayed"].any():
            head += f"; the mix replays {', '.join(sorted(set(g['replayed']) - {''}))}"
        lines.append(
            head + "): " + _most_learning(g, paired, model, label, size)
            + f"; the Pareto front (point estimates) is {front}. "
            + (f"Learning outside the noise: {', '.join(learned)}. " if learned else
               "No method's learning is outside the noise. ")
            + (f"Forgetting outside the noise: {', '.join(forgot)}." if forgot else
               "No method's forgetting is outside the noise."))
    return lines


def _most_learning(g: pd.DataFrame, paired, model, label, size) -> str:
    """'X learned most' only when the between-method test on the target task separates X
    from the runner-up; else the highest point estimate, said to be not separated."""
    ranked = g.sort_values("learning", ascending=False)
    first = ranked.iloc[0]
    if len(ranked) < 2:
        return f"{first['method']} learned {first['learning']:+.3g}"
    second = ranked.iloc[1]
    pair = {first["method"], second["method"]}
    separated = False
    if paired is not None and not paired.empty:
        vm = paired[(paired["comparison"] == "vs method") & (paired["model"] == model)
                    & (paired["train_data"] == label) & (paired["train_size"] == size)
                    & (paired["task"] == first["target"]) & paired["headline"].astype(bool)
                    & paired["method"].isin(pair) & paired["reference"].isin(pair)]
        separated = bool(vm["significant"].any())
    if separated:
        return (f"{first['method']} learned most ({first['learning']:+.3g}; {second['method']} "
                f"{second['learning']:+.3g}, separated by the paired between-method test)")
    return (f"highest learning point estimate {first['method']} ({first['learning']:+.3g}; next "
            f"{second['method']} {second['learning']:+.3g}), not separated by the paired between-method test")


def base_models(results: pd.DataFrame) -> list[str]:
    """Q3: does the base model matter? Needs at least two models."""
    models = sorted(results["model"].dropna().unique())
    if len(models) < 2:
        return [f"The grid has one base model ({', '.join(models) or 'none'}), so it cannot say "
                "how the choice of base model changes the results; add a model to the params file."]
    base = analysis.headline(results[results["method"] == "base"])
    lines = []
    for task, g in base.groupby("task"):
        g = g.sort_values("value", ascending=False)
        lines.append(f"On **{task}** the base models score " + ", ".join(
            f"{r['model']} {r['value']:.3f} ± {r['stderr']:.3f}" for _, r in g.iterrows()) + ".")
    return lines


def data_size(results: pd.DataFrame) -> list[str]:
    """Q4: does more data help? Needs at least two sizes."""
    tuned = results[~results["method"].isin(REFERENCES)]
    sizes = sorted(tuned["train_size"].dropna().unique())
    if len(sizes) < 2:
        return [f"The grid trains at one size ({', '.join(str(int(s)) for s in sizes) or 'none'}), "
                "so it cannot say how results change with the amount of data."]
    h = analysis.headline(tuned)
    lines = []
    for (label, task), g in h.groupby(["train_data", "task"]):
        m = g.groupby(["method", "train_size"])["value"].mean().unstack()
        trend = [f"{meth} {' → '.join(f'{v:.3f}' for v in row.dropna())}" for meth, row in m.iterrows()]
        lines.append(f"Trained on **{label}**, {task} from {int(sizes[0])} to {int(sizes[-1])} "
                     f"examples: " + "; ".join(trend) + ".")
    return lines


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


def tuning(summary: pd.DataFrame, pairs: pd.DataFrame | None = None) -> list[str]:
    """What the learning-rate sweep chose, and whether tuning changed the order of methods on
    the validation rows: an order is said to flip only where a pair's paired difference is
    outside the noise at both the configured and the chosen rates, with opposite signs."""
    if summary.empty:
        return ["Each method trained at one configured learning rate (no `tuning` section): the "
                "ranking may reflect those rates as much as the methods."]
    lines = []
    models = summary["model"].nunique()
    for (model, label, size, seed), g in summary.groupby(["model", "train_data", "train_size", "seed"], dropna=False):
        head = (_trained_on(model, models, label, size) + f", seed {_seed(seed)}), "
                f"{int(g['trials'].iloc[0])} trials per method")
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
            if pairs is not None and not pairs.empty:
                line += (" Orders that tuning flipped beyond the noise (paired sign-flip test on the validation "
                         "items, Holm): " + "; ".join(flips) + "." if flips else
                         " No pair of methods flipped order beyond the noise (paired sign-flip test on the "
                         "validation items, Holm).")
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
    """Pairs whose paired validation difference is outside the noise at both the configured
    and the chosen rates, with opposite signs."""
    if pairs is None or pairs.empty:
        return []
    p = pairs[(pairs["model"] == model) & (pairs["train_data"] == label) & (pairs["train_size"] == size)
              & (pairs["seed"] == seed)]
    out = []
    for (a, b), g in p.groupby(["method", "other"]):
        d, c = g[g["rates"] == "default"], g[g["rates"] == "chosen"]
        if len(d) and len(c) and bool(d["significant"].iloc[0]) and bool(c["significant"].iloc[0]) \
                and np.sign(d["difference"].iloc[0]) != np.sign(c["difference"].iloc[0]):
            first, second = (a, b) if d["difference"].iloc[0] < 0 else (b, a)
            out.append(f"{first} ahead of {second} at the configured rates, behind at the chosen ones")
    return out


def matched_forgetting(matched: pd.DataFrame, between: pd.DataFrame | None = None) -> list[str]:
    """Forgetting at matched learning per training set, seed and retention task; a method is
    said to forget less than another only where their paired difference is outside the noise."""
    if matched.empty:
        return ["No run kept a learning-forgetting curve (`training.eval_every` is 0)."]
    lines = []
    keys = ["model", "train_data", "train_size", "seed", "forgetting_task"]
    models = matched["model"].nunique()
    for (model, label, size, seed, task), g in matched.groupby(keys, dropna=False):
        head = _trained_on(model, models, label, size) + f", seed {_seed(seed)})"
        level = g["matched_learning"].iloc[0]
        if level <= 0:
            lines.append(f"{head}: {g['note'].iloc[0]}, so forgetting on {task} cannot be compared at matched learning.")
            continue
        parts = []
        for _, r in g.sort_values("method").iterrows():
            ci = f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if pd.notna(r.get("ci_low")) else " (no interval: every item alike)"
            parts.append(f"{r['method']} {r['forgetting']:+.4f}{ci}" + (" (outside the noise)" if r.get("significant") else ""))
        line = (f"{head}, at the learning level every method reaches ({level:.4f} bits/byte gained on the target), "
                f"bits/byte lost on {task} since step 0 (95% interval of the whole procedure, items resampled; "
                f"sign-flip test, Holm): " + "; ".join(parts) + ".")
        if between is not None and not between.empty:
            b = between[(between["model"] == model) & (between["train_data"] == label) & (between["train_size"] == size)
                        & (between["seed"] == seed) & (between["forgetting_task"] == task)]
            sep = b[b["significant"].astype(bool)]
            hint = b[~b["significant"].astype(bool) & ((b["ci_low"] > 0) | (b["ci_high"] < 0))]
            line += (" Between methods: " + "; ".join(
                f"{r['method'] if r['difference'] < 0 else r['other']} forgets less than "
                f"{r['other'] if r['difference'] < 0 else r['method']} ({abs(r['difference']):.4f} bits/byte, "
                f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] for {r['method']} - {r['other']})"
                for _, r in sep.iterrows()) + "." if len(sep) else
                     " No pair of methods differs in forgetting at this level beyond the noise.")
            if len(hint):
                line += (" Intervals that exclude zero although the Holm-adjusted test does not separate the pair: "
                         + "; ".join(f"{r['method']} - {r['other']} {r['difference']:+.4f} [{r['ci_low']:+.4f}, "
                                     f"{r['ci_high']:+.4f}], adjusted p={r['p_adjusted']:.2g}" for _, r in hint.iterrows()) + ".")
        if g["note"].iloc[0]:
            line += f" Note: {g['note'].iloc[0]}."
        lines.append(line)
    return lines


def budget(runs: pd.DataFrame, summary: pd.DataFrame | None = None) -> list[str]:
    """What every comparison held equal across methods, and what it did not."""
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
        rate = ("the learning rate chosen by an equal sweep on validation rows" if summary is not None
                and not summary.empty else "each method's own configured learning rate (not tuned)")
        lines.append(_trained_on(model, models, label, size) + f"): held equal: {equal}; {rate}. Not held equal: "
                     f"wall time ({g['train_wall_s'].min():.0f}-{g['train_wall_s'].max():.0f} s of training), "
                     f"peak memory in training ({analysis.peak_memory(g).min():.0f}-{analysis.peak_memory(g).max():.0f} MiB), trainable "
                     f"parameters ({int(g['trainable_params'].min()):,}-{int(g['trainable_params'].max()):,}).")
    return lines
