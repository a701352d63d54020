"""Figures for the analysis notebook (matplotlib/seaborn); each returns its Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ftstudy import analysis
from ftstudy.methods import REFERENCES


def _bars(ax, df: pd.DataFrame, value: str, err: str, order: list[str]):
    x = np.arange(len(order))
    ax.bar(x, [df.loc[df["method"] == m, value].mean() for m in order],
           yerr=[np.sqrt((df.loc[df["method"] == m, err] ** 2).mean()) for m in order],
           color=sns.color_palette("colorblind", len(order)), capsize=3)
    ax.set_xticks(x, order, rotation=45, ha="right")


def scores(results: pd.DataFrame, group: str = "train_data"):
    """Headline score per task and method, ±1 stderr (lm-eval's), one row per training set."""
    df = analysis.headline(results)
    tasks = sorted(df["task"].unique())
    base = df[df["method"].isin(REFERENCES)]
    groups = [g for g in df.loc[~df["method"].isin(REFERENCES), group].dropna().unique()]
    fig, axes = plt.subplots(max(1, len(groups)), len(tasks), squeeze=False,
                             figsize=(3.6 * len(tasks), 3.0 * max(1, len(groups))))
    for i, g in enumerate(groups or [None]):
        for j, t in enumerate(tasks):
            sub = pd.concat([base[base["task"] == t],
                             df[(df["task"] == t) & (df[group] == g)]])
            order = ([r for r in REFERENCES if r in set(sub["method"])] +
                     [m for m in sub["method"].unique() if m not in REFERENCES])
            _bars(axes[i][j], sub, "value", "stderr", order)
            axes[i][j].set_title(f"{t}\ntrained on {g}", fontsize=9)
            axes[i][j].set_ylabel(sub["metric"].iloc[0] if len(sub) else "")
    fig.tight_layout()
    return fig


def forest(paired: pd.DataFrame, comparison: str = "vs base"):
    """Paired change vs the reference per task: a point and its 95% interval per (training
    data, method), signed so that right is better; filled where the Holm-adjusted test says
    outside the noise, hollow where not."""
    d = analysis.improvement(paired[paired["comparison"] == comparison])
    d = d[d["headline"].astype(bool)]
    tasks = sorted(d["task"].unique())
    fig, axes = plt.subplots(1, max(1, len(tasks)), squeeze=False,
                             figsize=(3.4 * max(1, len(tasks)), 0.9 + 0.32 * max(1, d.groupby(["train_data", "method"]).ngroups)),
                             sharey=True)
    labels = sorted({(str(t), str(m)) for t, m in zip(d["train_data"], d["method"])})
    ypos = {lab: i for i, lab in enumerate(labels)}
    palette = dict(zip(sorted(d["method"].unique()), sns.color_palette("colorblind", 10)))
    for ax, task in zip(axes[0], tasks):
        sub = d[d["task"] == task]
        for _, r in sub.iterrows():
            y = ypos[(str(r["train_data"]), str(r["method"]))]
            color = palette[r["method"]]
            ax.errorbar(r["gain"], y, xerr=[[r["gain"] - r["gain_low"]], [r["gain_high"] - r["gain"]]],
                        fmt="o", color=color, capsize=2, markerfacecolor=color if r["significant"] else "white")
        ax.axvline(0, color="black", lw=0.8)
        metric = sub["metric"].iloc[0] if len(sub) else ""
        ax.set_title(f"{task}\n({metric}, right = better)", fontsize=9)
    axes[0][0].set_yticks(range(len(labels)), [f"{m} · {t}" for t, m in labels], fontsize=8)
    fig.tight_layout()
    return fig


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
    done = done.assign(peak_mb=analysis.peak_memory(done))
    metrics = [("train_wall_s", "train time (s)"), ("peak_mb", "peak memory in training (MiB)"),
               ("trainable_params", "trainable parameters")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
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
    groups = list(lf["train_data"].unique()) if not lf.empty else []
    fig, axes = plt.subplots(1, max(1, len(groups)), squeeze=False,
                             figsize=(4.6 * max(1, len(groups)), 3.8))
    palette = dict(zip(sorted(lf["method"].unique()) if not lf.empty else [],
                       sns.color_palette("colorblind", 10)))
    for ax, g_name in zip(axes[0], groups):
        g = lf[lf["train_data"] == g_name]
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
        ax.set_title(f"trained on {g_name}", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def data_size_curves(results: pd.DataFrame):
    """Headline score against training examples (log axis), one line per method, ±1 stderr
    bands; works with one size (points) or many."""
    df = analysis.headline(results[~results["method"].isin(REFERENCES)])
    tasks = sorted(df["task"].unique())
    groups = list(df["train_data"].dropna().unique())
    base = analysis.headline(results[results["method"] == "base"])  # dotted reference line
    fig, axes = plt.subplots(max(1, len(groups)), max(1, len(tasks)), squeeze=False,
                             figsize=(3.6 * max(1, len(tasks)), 3.0 * max(1, len(groups))))
    for i, g in enumerate(groups):
        for j, t in enumerate(tasks):
            ax = axes[i][j]
            sub = df[(df["train_data"] == g) & (df["task"] == t)]
            for k, (m, mm) in enumerate(sub.groupby("method")):
                agg = mm.groupby("train_size").agg(value=("value", "mean"), se=("stderr", "mean")).reset_index()
                color = sns.color_palette("colorblind", 10)[k % 10]
                ax.plot(agg["train_size"], agg["value"], marker="o", label=m, color=color)
                ax.fill_between(agg["train_size"], agg["value"] - agg["se"], agg["value"] + agg["se"],
                                alpha=0.15, color=color)
            b = base[base["task"] == t]["value"]
            if len(b):
                ax.axhline(b.mean(), color="black", ls=":", lw=1, label="base")
            ax.set_xscale("log")
            ax.set_title(f"{t}\ntrained on {g}", fontsize=9)
            ax.set_xlabel("training examples")
    if groups and tasks:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def score_vs_cost(results: pd.DataFrame, runs: pd.DataFrame, cost: str = "train_wall_s"):
    """Headline score against a cost column, one point per run, per task."""
    df = analysis.headline(results[~results["method"].isin(REFERENCES)]).merge(
        runs[["run_id", cost]], on="run_id")
    tasks = sorted(df["task"].unique())
    fig, axes = plt.subplots(1, max(1, len(tasks)), squeeze=False, figsize=(3.8 * max(1, len(tasks)), 3.2))
    for ax, t in zip(axes[0], tasks):
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
    fig, axes = plt.subplots(1, max(1, len(tasks)), squeeze=False, figsize=(3.6 * max(1, len(tasks)), 2.8))
    for ax, (_, r) in zip(axes[0], b.drop_duplicates("task").iterrows()):
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
    fig, axes = plt.subplots(1, max(1, len(groups)), squeeze=False, figsize=(5.2 * max(1, len(groups)), 3.8))
    palette = _palette(trials["method"]) if not trials.empty else {}
    for ax, key in zip(axes[0], groups):
        g = trials[(trials["model"] == key[0]) & (trials["train_data"] == key[1]) & (trials["train_size"] == key[2])]
        for method, m in g.groupby("method"):
            curve = m.groupby("learning_rate")["validation_bpb"].mean().sort_index()
            ax.plot(curve.index, curve.values, "-o", color=palette[method], label=method, markersize=4)
            chosen = m[m["selected"].astype(bool)]
            ax.plot(chosen["learning_rate"], chosen["validation_bpb"], "*", color=palette[method],
                    markersize=14, markeredgecolor="black")
            default = m[analysis.at_configured_rate(m)]
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
    fig, axes = plt.subplots(1, max(1, len(groups)), squeeze=False, figsize=(5.2 * max(1, len(groups)), 4.0))
    palette = _palette(path["method"]) if not path.empty else {}
    for ax, key in zip(axes[0], groups):
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
