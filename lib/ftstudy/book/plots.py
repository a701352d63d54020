"""Figures for the analysis notebook (matplotlib/seaborn); each returns its Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ftstudy.analysis import views, verdicts
from ftstudy.compute.methods import REFERENCES


MAX_WIDTH_IN = 9.0  # a book column shows ~800 px: wider figures shrink their labels


def _panels(n: int, w: float, h: float, **kw):
    """A figure of `n` panels of w x h inches, wrapped into rows so that it is at most
    MAX_WIDTH_IN wide; returns (figure, list of the n axes)."""
    n = max(1, n)
    cols = max(1, min(n, int(MAX_WIDTH_IN // w)))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(w * cols, h * rows), **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _label(key) -> str:
    """A (model, training data, size) configuration in a panel title."""
    model, label, size = key
    return f"{model}, trained on {label} (n={int(size)})"


def _bars(ax, df: pd.DataFrame, value: str, err: str, order: list[str]):
    x = np.arange(len(order))
    ax.bar(x, [df.loc[df["method"] == m, value].mean() for m in order],
           yerr=[np.sqrt((df.loc[df["method"] == m, err] ** 2).mean()) for m in order],
           color=sns.color_palette("colorblind", len(order)), capsize=3)
    ax.set_xticks(x, order, rotation=45, ha="right")


def scores(results: pd.DataFrame):
    """Headline score per task and method, ±1 stderr (lm-eval's), one panel per task and
    (model, training data, size), the reference models beside the trained ones."""
    df = views.headline(results)
    tasks = sorted(df["task"].unique())
    base = df[df["method"].isin(REFERENCES)]
    tuned = df[~df["method"].isin(REFERENCES)]
    configs = list(tuned.groupby(["model", "train_data", "train_size"]).groups) or [None]
    fig, axes = _panels(len(configs) * len(tasks), 3.0, 2.8)
    for k, (cfg, t) in enumerate((c, t) for c in configs for t in tasks):
        ax = axes[k]
        sub = tuned[(tuned["task"] == t)]
        ref = base[base["task"] == t]
        if cfg is not None:
            sub = sub[(sub["model"] == cfg[0]) & (sub["train_data"] == cfg[1]) & (sub["train_size"] == cfg[2])]
            ref = ref[ref["model"] == cfg[0]]
        sub = pd.concat([ref, sub])
        order = ([r for r in REFERENCES if r in set(sub["method"])] +
                 [m for m in sub["method"].unique() if m not in REFERENCES])
        _bars(ax, sub, "value", "stderr", order)
        ax.set_title(f"{t}\n{_label(cfg) if cfg else ''}", fontsize=8)
        ax.set_ylabel(sub["metric"].iloc[0] if len(sub) else "", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def forest(paired: pd.DataFrame, comparison: str = "vs base"):
    """Paired change vs the reference, one figure per (model, training data, size) with a
    panel per task (see `headline`); returns the list of figures."""
    d = paired[paired["comparison"] == comparison]
    return [headline(paired, key) for key in d.groupby(["model", "train_data", "train_size"]).groups]


def loss_curve(loss_curve: list[dict], title: str = "training loss"):
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([p["step"] for p in loss_curve], [p["loss"] for p in loss_curve], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def cost(runs: pd.DataFrame):
    """Train time, peak memory and trainable parameters per method, side by side."""
    done = runs[(runs["status"] == "done") & ~runs["method"].isin(REFERENCES)
                & ~runs["control"].fillna(False).astype(bool)]
    done = done.assign(peak_mb=views.peak_memory(done))
    metrics = [("train_wall_s", "train time (s)"), ("peak_mb", "peak memory in training (MiB)"),
               ("trainable_params", "trainable parameters")]
    fig, axes = _panels(len(metrics), 3.0, 3.0)
    for ax, (col, label) in zip(axes, metrics):
        sns.barplot(data=done, x="method", y=col, ax=ax, errorbar=("pi", 100),
                    palette="colorblind", hue="method", legend=False)
        ax.set_ylabel(label)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=45)
        if col == "trainable_params":
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def learning_vs_forgetting(lf: pd.DataFrame, axes_label: str = "bits/byte"):
    """Learning (x) against mean forgetting (y) per run, paired 95% CIs, Pareto front
    marked; one panel per training set. Best is bottom right."""
    groups = list(lf.groupby(views.PARETO_GROUP).groups) if not lf.empty else []
    fig, axes = _panels(len(groups), 4.4, 3.6)
    palette = _palette(lf["method"]) if not lf.empty else {}
    for ax, key in zip(axes, groups):
        g = lf[(lf["model"] == key[0]) & (lf["train_data"] == key[1]) & (lf["train_size"] == key[2])]
        for _, r in g.iterrows():
            ax.errorbar(r["learning"], r["forgetting"],
                        xerr=[[r["learning"] - r["learning_low"]], [r["learning_high"] - r["learning"]]],
                        yerr=[[r["forgetting"] - r["forgetting_low"]], [r["forgetting_high"] - r["forgetting"]]],
                        fmt="o", color=palette[r["method"]], capsize=3, label=r["method"],
                        markeredgecolor="black" if r["pareto"] else palette[r["method"]],
                        markersize=9 if r["pareto"] else 6)
        front = g[g["pareto"]].sort_values("learning")
        ax.plot(front["learning"], front["forgetting"], "--", color="grey", lw=1, label="Pareto front")
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel(f"learning: gain on {g['target'].iloc[0]} ({axes_label})")
        ax.set_ylabel(f"forgetting: mean loss on {g['retention_tasks'].iloc[0]}")
        ax.set_title(_label(key), fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def data_size_curves(results: pd.DataFrame):
    """Headline score against training examples (log axis), one line per method, ±1 stderr
    bands, one panel per (model, training data) and task; the dotted line is that model's
    reference. Works with one size (points) or many."""
    df = views.headline(results[~results["method"].isin(REFERENCES)])
    tasks = sorted(df["task"].unique())
    groups = list(df.groupby(["model", "train_data"]).groups)
    base = views.headline(results[results["method"] == "base"])
    fig, axes = _panels(max(1, len(groups) * len(tasks)), 3.0, 2.8)
    palette = _palette(df["method"])
    for k, ((model, label), t) in enumerate((g, t) for g in groups for t in tasks):
        ax = axes[k]
        sub = df[(df["model"] == model) & (df["train_data"] == label) & (df["task"] == t)]
        for m, mm in sub.groupby("method"):
            agg = mm.groupby("train_size").agg(value=("value", "mean"), se=("stderr", "mean")).reset_index()
            ax.plot(agg["train_size"], agg["value"], marker="o", label=m, color=palette[m])
            ax.fill_between(agg["train_size"], agg["value"] - agg["se"], agg["value"] + agg["se"],
                            alpha=0.15, color=palette[m])
        b = base[(base["task"] == t) & (base["model"] == model)]["value"]
        if len(b):
            ax.axhline(b.mean(), color="black", ls=":", lw=1, label="base")
        ax.set_xscale("log")
        ax.set_title(f"{t}\n{model}, trained on {label}", fontsize=8)
        ax.set_xlabel("training examples", fontsize=8)
        ax.tick_params(labelsize=7)
    if groups and tasks:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def score_vs_cost(results: pd.DataFrame, runs: pd.DataFrame, cost: str = "train_wall_s"):
    """Headline score against a cost column, one point per run, per task."""
    df = views.headline(results[~results["method"].isin(REFERENCES)]).merge(
        runs[["run_id", cost]], on="run_id")
    tasks = sorted(df["task"].unique())
    fig, axes = _panels(len(tasks), 3.0, 3.0)
    for ax, t in zip(axes, tasks):
        sns.scatterplot(data=df[df["task"] == t], x=cost, y="value", hue="method", style="train_data",
                        ax=ax, palette="colorblind", s=60)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel(cost.replace("_", " "))
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def answer_distribution(baselines: pd.DataFrame, method: str = "base"):
    """Share of each answer choice the model picked, per multiple-choice task."""
    b = baselines[baselines["method"] == method]
    share_cols = [c for c in b.columns if c.startswith("share_")]
    tasks = list(b["task"].unique())
    rows = b.drop_duplicates(["model", "task"])
    fig, axes = _panels(len(rows), 3.0, 2.6)
    for ax, (_, r) in zip(axes, rows.iterrows()):
        ax.bar(["ABCD"[int(c.split("_")[1])] for c in share_cols], [r[c] for c in share_cols],
               color=sns.color_palette("colorblind", 4))
        ax.axhline(r["chance"], color="black", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1)
        ax.set_title(f"{r['task']}\n{r['model']} {method}", fontsize=9)
        ax.set_ylabel("share of answers")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _palette(methods) -> dict:
    return dict(zip(sorted(set(methods)), sns.color_palette("colorblind", 10)))


def sensitivity(trials: pd.DataFrame):
    """Validation score against learning rate (log axis), one line per method and one panel
    per (model, training data, size); a star marks the chosen rate, an open circle the
    method's default. Flat lines: the method is forgiving; sharp ones: its rate matters."""
    groups = list(trials.groupby(["model", "train_data", "train_size"]).groups) if not trials.empty else []
    fig, axes = _panels(len(groups), 4.4, 3.6)
    palette = _palette(trials["method"]) if not trials.empty else {}
    for ax, key in zip(axes, groups):
        g = trials[(trials["model"] == key[0]) & (trials["train_data"] == key[1]) & (trials["train_size"] == key[2])]
        for method, m in g.groupby("method"):
            curve = m.groupby("learning_rate")["validation_bpb"].mean().sort_index()
            ax.plot(curve.index, curve.values, "-o", color=palette[method], label=method, markersize=4)
            chosen = m[m["selected"].astype(bool)]
            ax.plot(chosen["learning_rate"], chosen["validation_bpb"], "*", color=palette[method],
                    markersize=14, markeredgecolor="black")
            default = m[views.at_configured_rate(m)]
            ax.plot(default["learning_rate"], default["validation_bpb"], "o", mfc="none",
                    markeredgecolor="black", markersize=10)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation bits/byte (lower is better)")
        ax.set_title(f"{key[0]}, trained on {key[1]} (n={int(key[2])})\nscored on {g['validation_task'].iloc[0]}",
                     fontsize=10)
        ax.legend(fontsize=7, loc="best", title="★ chosen  ○ default", title_fontsize=7)
    fig.tight_layout()
    return fig


def learning_forgetting_curves(path: pd.DataFrame, matched: pd.DataFrame | None = None):
    """Along training: learning (x, bits/byte gained on the target task since step 0) against
    forgetting (y, bits/byte lost on another held-out task), one line per method from its
    step 0 at the origin; the dotted line is the matched learning level. Best is bottom right."""
    groups = list(path.groupby(["model", "train_data", "train_size", "forgetting_task"]).groups) if not path.empty else []
    fig, axes = _panels(len(groups), 4.4, 3.6)
    palette = _palette(path["method"]) if not path.empty else {}
    for ax, key in zip(axes, groups):
        g = path[(path["model"] == key[0]) & (path["train_data"] == key[1]) & (path["train_size"] == key[2])
                 & (path["forgetting_task"] == key[3])]
        for method, m in g.groupby("method"):
            m = m.groupby("step")[["learning", "forgetting"]].mean().sort_index()  # seeds averaged
            ax.plot(m["learning"], m["forgetting"], "-o", color=palette[method], label=method, markersize=4)
        if matched is not None and not matched.empty:
            level = matched[(matched["train_data"] == key[1]) & (matched["forgetting_task"] == key[3])
                            & (matched["model"] == key[0])]["matched_learning"]
            if len(level) and level.iloc[0] > 0:
                ax.axvline(level.iloc[0], color="grey", ls=":", lw=1, label="matched learning")
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("learning: bits/byte gained on the target since step 0")
        ax.set_ylabel(f"forgetting: bits/byte lost on {key[3]}")
        ax.set_title(f"{key[0]}, trained on {key[1]} (n={int(key[2])})", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def headline(aggregated: pd.DataFrame, main: verdicts.Condition, width_in: float = 8.0):
    """The front page's figure: each method's paired change vs its reference in the main
    condition, one panel per task (point and 95% interval, signed so right is better),
    filled where the verdicts table says separated (`verdicts.decide`). Sized for a book column."""
    model, label, size = main
    if "verdict" not in aggregated:
        aggregated = verdicts.annotate({"aggregated": aggregated})["aggregated"]
    d = views.improvement(aggregated[(aggregated["comparison"] == "vs base")])
    d = d[d["headline"].astype(bool) & (d["model"] == model) & (d["train_data"] == label) & (d["train_size"] == size)]
    tasks = list(dict.fromkeys(d["task"]))
    cols = 2 if len(tasks) > 1 else 1
    rows = max(1, -(-len(tasks) // cols))
    methods = list(dict.fromkeys(d.sort_values("method")["method"]))
    fig, axes = plt.subplots(rows, cols, squeeze=False, sharey=True,
                             figsize=(width_in, 0.6 + rows * (0.5 + 0.3 * len(methods))))
    palette = _palette(methods)
    for ax, task in zip(axes.flat, tasks):
        sub = d[d["task"] == task]
        for _, r in sub.iterrows():
            y = methods.index(r["method"])
            color = palette[r["method"]]
            lo, hi = r["gain_low"], r["gain_high"]
            err = [[r["gain"] - lo], [hi - r["gain"]]] if not pd.isna(lo) else None
            ax.errorbar(r["gain"], y, xerr=err, fmt="o", color=color, capsize=3, markersize=6,
                        markerfacecolor=color if r["verdict"] == verdicts.SEPARATED else "white")
        ax.axvline(0, color="black", lw=0.8)
        unit = "bits/byte" if sub["metric"].iloc[0] == "bits_per_byte" else sub["metric"].iloc[0]
        ax.set_title(f"{task}", fontsize=10)
        ax.set_xlabel(f"gain in {unit} (right = better)", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_yticks(range(len(methods)), methods, fontsize=9)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"Change vs reference: {model}, trained on {label} (n={int(size)}); "
                 "filled: the verdict is separated", fontsize=9)
    fig.tight_layout()
    return fig
