"""Figures for the analysis notebook (matplotlib/seaborn); each returns its Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ftstudy import analysis


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
    groups = [g for g in df[group].dropna().unique()]
    base = df[df["method"] == "base"]
    fig, axes = plt.subplots(max(1, len(groups)), len(tasks), squeeze=False,
                             figsize=(3.6 * len(tasks), 3.0 * max(1, len(groups))))
    for i, g in enumerate(groups or [None]):
        for j, t in enumerate(tasks):
            sub = pd.concat([base[base["task"] == t],
                             df[(df["task"] == t) & (df[group] == g)]])
            order = ["base"] + [m for m in sub["method"].unique() if m != "base"]
            _bars(axes[i][j], sub, "value", "stderr", order)
            axes[i][j].set_title(f"{t}\ntrained on {g}", fontsize=9)
            axes[i][j].set_ylabel(sub["metric"].iloc[0] if len(sub) else "")
    fig.tight_layout()
    return fig


def change_vs_base(results: pd.DataFrame):
    """Change vs the base model per task and method: above 0 learned, below 0 forgot."""
    d = analysis.vs_base(analysis.headline(results))
    tasks = sorted(d["task"].unique())
    groups = list(d["train_data"].unique())
    fig, axes = plt.subplots(max(1, len(groups)), max(1, len(tasks)), squeeze=False,
                             figsize=(3.6 * max(1, len(tasks)), 3.0 * max(1, len(groups))),
                             sharey="row")
    for i, g in enumerate(groups):
        for j, t in enumerate(tasks):
            sub = d[(d["task"] == t) & (d["train_data"] == g)]
            order = list(sub["method"].unique())
            _bars(axes[i][j], sub, "delta", "delta_stderr", order)
            axes[i][j].axhline(0, color="black", lw=0.8)
            kind = sub["kind"].iloc[0] if len(sub) else ""
            axes[i][j].set_title(f"{t} ({kind})\ntrained on {g}", fontsize=9)
            axes[i][j].set_ylabel("Δ vs base")
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
    done = runs[(runs["status"] == "done") & (runs["method"] != "base")]
    metrics = [("train_wall_s", "train time (s)"), ("peak_rss_mb", "peak memory (MiB)"),
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
