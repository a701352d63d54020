"""Analysis tables: scores, change vs the base model, cost. Plain pandas, no plotting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ftstudy import data
from ftstudy.methods import REFERENCES
from ftstudy.stats import LOWER_IS_BETTER

# The headline metric of each task (lm-eval's names, as in results.csv).
HEADLINE = {"gsm8k": "exact_match_flexible-extract", "hellaswag": "acc_norm",
            "mmlu_high_school_computer_science": "acc",
            "gsm8k_nll": "bits_per_byte", "alpaca_nll": "bits_per_byte"}
BASE_LABEL = "(base model)"


def load(outputs: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    outputs = Path(outputs)
    results = pd.read_csv(outputs / "results.csv")
    runs = pd.read_csv(outputs / "runs.csv")
    for df in (results, runs):  # the base model has no training data: label it for tables
        df.loc[df["method"].isin(REFERENCES), "train_data"] = BASE_LABEL
    return results, runs


def headline(results: pd.DataFrame) -> pd.DataFrame:
    keep = results.apply(lambda r: HEADLINE.get(r["task"]) == r["metric"], axis=1)
    return results[keep] if len(results) else results


def vs_base(results: pd.DataFrame) -> pd.DataFrame:
    """Each fine-tuned score minus its base model's on the same task and metric.

    `kind` is "learning" on the training data's target task, else "forgetting" (a
    negative delta there is forgetting). The stderr of the difference treats the two runs
    as independent: conservative when both scored the same items (the paired analysis
    from per-sample logs is tighter).
    """
    refs = results[results["method"].isin(REFERENCES)][["model", "method", "task", "metric", "value", "stderr"]]
    refs = refs.rename(columns={"method": "reference"})
    tuned = results[~results["method"].isin(REFERENCES)].copy()
    available = set(zip(refs["model"], refs["reference"]))
    tuned["reference"] = ["base_4bit" if m == "qlora" and (mod, "base_4bit") in available else "base"
                          for m, mod in zip(tuned["method"], tuned["model"])]
    merged = tuned.merge(refs, on=["model", "reference", "task", "metric"], suffixes=("", "_base"))
    merged["delta"] = merged["value"] - merged["value_base"]
    merged["delta_stderr"] = np.sqrt(merged["stderr"].fillna(0) ** 2 +
                                     merged["stderr_base"].fillna(0) ** 2)
    merged["kind"] = [("learning" if target_task(td) == t else "forgetting")
                      for td, t in zip(merged["train_data"], merged["task"])]
    return merged


def target_task(train_data_label: str, key: str = "target_task") -> str | None:
    """The eval task a training-data label targets (`key`: "target_task" for accuracy,
    "target_nll" for held-out log-likelihood): a known set's own, else the first set the
    label starts with (e.g. "gsm8k+replay" -> gsm8k_train)."""
    label = str(train_data_label)
    if label in data.TRAIN_SETS:
        return data.TRAIN_SETS[label][key]
    for name, spec in data.TRAIN_SETS.items():
        if label.startswith(name.split("_")[0]):
            return spec[key]
    return None


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method (mean over runs): time, throughput, memory, parameters, artifact size."""
    done = runs[(runs["status"] == "done") & ~runs["method"].isin(REFERENCES)].copy()
    if done.empty:
        return done
    done["trainable_%"] = 100 * done["trainable_params"] / done["total_params"]
    done["artifact_MB"] = done["artifact_bytes"] / 1e6
    cols = {"train_wall_s": "train time (s)", "tokens_per_s": "tokens/s",
            "peak_rss_mb": "peak memory (MiB)", "trainable_params": "trainable params",
            "trainable_%": "trainable %", "artifact_MB": "artifact (MB)",
            "eval_wall_s": "eval time (s)"}
    table = done.groupby(["model", "method"])[list(cols)].mean().rename(columns=cols)
    return table.round({"train time (s)": 1, "tokens/s": 0, "peak memory (MiB)": 0,
                        "trainable %": 3, "artifact (MB)": 2, "eval time (s)": 1})


def failed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "done"][["run_id", "model", "method", "train_data",
                                           "train_size", "seed", "status", "error"]]


# ----------------------------------------------------------- learning vs forgetting

def load_paired(outputs: str | Path) -> pd.DataFrame:
    path = Path(outputs) / "paired.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def load_baselines(outputs: str | Path) -> pd.DataFrame:
    path = Path(outputs) / "baselines.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def improvement(df: pd.DataFrame) -> pd.DataFrame:
    """Paired differences signed so that positive always means better than the reference."""
    out = df.copy()
    sign = np.where(out["metric"].isin(LOWER_IS_BETTER), -1.0, 1.0)
    out["gain"] = sign * out["mean_diff"]
    lo, hi = sign * out["ci_low"], sign * out["ci_high"]
    out["gain_low"], out["gain_high"] = np.minimum(lo, hi), np.maximum(lo, hi)
    out["significant"] = (out["gain_low"] > 0) | (out["gain_high"] < 0)
    return out


def headline_metric(task: str) -> str:
    return HEADLINE.get(task, "bits_per_byte")


def learning_forgetting(paired: pd.DataFrame, axes: str = "nll") -> pd.DataFrame:
    """Per fine-tuned run: learning (gain on its target task) and forgetting (mean loss on
    the other tasks), both from item-paired differences vs its base model.

    axes="nll": held-out answer log-likelihood tasks (bits per byte); "accuracy": the
    benchmark tasks' headline metrics.
    """
    if paired.empty:
        return pd.DataFrame()
    df = improvement(paired[paired["comparison"] == "vs base"])
    df = df[df["metric"] == df["task"].map(headline_metric)]
    nll = df["task"].str.endswith("_nll")
    df = df[nll] if axes == "nll" else df[~nll]
    rows = []
    for run_id, g in df.groupby("run_id"):
        label = g["train_data"].iloc[0]
        target = target_task(label, "target_task" if axes == "accuracy" else "target_nll")
        learn = g[g["task"] == target]
        other = g[g["task"] != target]
        if learn.empty or other.empty:
            continue
        rows.append(dict(run_id=run_id, method=g["method"].iloc[0], model=g["model"].iloc[0],
                         train_data=label, train_size=g["train_size"].iloc[0], seed=g["seed"].iloc[0],
                         target=target, learning=learn["gain"].iloc[0],
                         learning_low=learn["gain_low"].iloc[0], learning_high=learn["gain_high"].iloc[0],
                         forgetting=-other["gain"].mean(),
                         forgetting_low=-other["gain_high"].mean(), forgetting_high=-other["gain_low"].mean(),
                         retention_tasks=", ".join(other["task"])))
    out = pd.DataFrame(rows)
    if not out.empty:
        out["pareto"] = pareto_front(out)
    return out


def pareto_front(df: pd.DataFrame) -> pd.Series:
    """True where no other run of the same training data learns more and forgets less."""
    flags = pd.Series(False, index=df.index)
    for _, g in df.groupby("train_data"):
        for i, r in g.iterrows():
            dominated = ((g["learning"] >= r["learning"]) & (g["forgetting"] <= r["forgetting"]) &
                         ((g["learning"] > r["learning"]) | (g["forgetting"] < r["forgetting"]))).any()
            flags[i] = not dominated
    return flags


def seed_spread(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count across seeds of each (model, method, data, size)."""
    keys = ["model", "method", "train_data", "train_size", "task", "metric"]
    g = results.groupby(keys, dropna=False)["value"]
    return g.agg(mean="mean", std="std", seeds="count").reset_index()
