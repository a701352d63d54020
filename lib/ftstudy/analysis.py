"""Analysis tables: scores, controls, learning vs forgetting, cost. Plain pandas, no plotting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ftstudy import stats
from ftstudy.evaluate import HEADLINE, headline_metric
from ftstudy.methods import REFERENCES
from ftstudy.stats import LOWER_IS_BETTER

BASE_LABEL = "(base model)"
CONTROL_LABEL = "(control: 0 steps)"


def load(outputs: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, runs): scores of the grid's runs and references (zero-step controls are
    reported apart, see `controls`), and every run's status and cost."""
    outputs = Path(outputs)
    results = pd.read_csv(outputs / "results.csv")
    runs = pd.read_csv(outputs / "runs.csv")
    for df in (results, runs):  # the base model has no training data: label it for tables
        df.loc[df["method"].isin(REFERENCES), "train_data"] = BASE_LABEL
        df.loc[df["control"].fillna(False).astype(bool), "train_data"] = CONTROL_LABEL
    return results[~results["control"].fillna(False).astype(bool)], runs


def headline(results: pd.DataFrame) -> pd.DataFrame:
    keep = results.apply(lambda r: HEADLINE.get(r["task"]) == r["metric"], axis=1)
    return results[keep] if len(results) else results


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method (mean over runs): time, throughput, memory, parameters, artifact size."""
    done = runs[(runs["status"] == "done") & ~runs["method"].isin(REFERENCES)
                & ~runs["control"].fillna(False).astype(bool)].copy()
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

def measurement_check(outputs: str | Path, runs: pd.DataFrame) -> str:
    """A sentence, from the run records, on whether every finished run was evaluated in one
    precision and on the same items of each task (what the comparisons assume)."""
    import json

    dtypes, items = {}, {}
    for rid in runs.loc[runs["status"] == "done", "run_id"]:
        m = json.loads((Path(outputs) / "runs" / rid / "metrics.json").read_text())
        dtypes.setdefault(str(m.get("eval_dtype")), []).append(rid)
        for task, ids in (m.get("eval_items") or {}).items():
            items.setdefault(task, set()).add(json.dumps(ids))
    n = sum(len(v) for v in dtypes.values())
    if not n:
        return "No run has finished."
    text = (f"All {n} finished runs were evaluated in {next(iter(dtypes))}" if len(dtypes) == 1 else
            f"⚠ The finished runs were evaluated in different precisions: "
            + "; ".join(f"{d}: {len(r)} runs" for d, r in dtypes.items()))
    mixed = sorted(t for t, v in items.items() if len(v) > 1)
    text += (f"; ⚠ runs scored different items on {', '.join(mixed)}." if mixed else
             ", each task on the same items in every run.")
    return text


def load_table(outputs: str | Path, name: str) -> pd.DataFrame:
    """One of the study's CSV tables (`paired`, `aggregated`, `refused`, `baselines`,
    `outside_grid`); empty when absent or empty."""
    path = Path(outputs) / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def load_paired(outputs: str | Path) -> pd.DataFrame:
    """Paired differences per configuration, seeds aggregated: what verdicts rest on."""
    return load_table(outputs, "aggregated")


def load_baselines(outputs: str | Path) -> pd.DataFrame:
    return load_table(outputs, "baselines")


def improvement(df: pd.DataFrame) -> pd.DataFrame:
    """Paired differences signed so that positive always means better than the reference.
    `significant` stays the Holm-adjusted test's verdict (see `stats.adjust`)."""
    out = df.copy()
    sign = np.where(out["metric"].isin(LOWER_IS_BETTER), -1.0, 1.0)
    out["gain"] = sign * out["mean_diff"]
    lo, hi = sign * out["ci_low"], sign * out["ci_high"]
    out["gain_low"], out["gain_high"] = np.minimum(lo, hi), np.maximum(lo, hi)
    out["significant"] = out["significant"].fillna(False).astype(bool)
    return out


CONFIG = ["model", "method", "train_data", "train_size"]


def controls(outputs: str | Path, paired_runs: pd.DataFrame, tol: float = 1e-5) -> pd.DataFrame:
    """The zero-step controls: per control run, the largest per-item log-likelihood gap to
    its reference over the log-likelihood tasks, and the headline change per task. A method
    that is an identity at initialisation must show a gap <= `tol`; prompt tuning is not,
    and its row is its shift at initialisation."""
    if paired_runs.empty or "control" not in set(paired_runs["comparison"]):
        return pd.DataFrame()
    c = paired_runs[(paired_runs["comparison"] == "control") & paired_runs["headline"]]
    outputs = Path(outputs)
    rows = []
    for (run_id, ref_id), g in c.groupby(["run_id", "reference_run_id"]):
        gaps = []
        for task in g["task"]:
            a = stats.item_logliks(outputs / "runs" / ref_id, task)
            b = stats.item_logliks(outputs / "runs" / run_id, task)
            if len(a) and a.index.equals(b.index):
                gaps.append(float((a - b).abs().max()))
        gap = max(gaps) if gaps else np.nan
        row = {"method": g["method"].iloc[0], "reference": g["reference"].iloc[0], "max |Δ loglik|": gap,
               "identity": bool(gap <= tol) if gaps else None}
        row.update({f"Δ {t}": v for t, v in zip(g["task"], g["mean_diff"])})
        rows.append(row)
    return pd.DataFrame(rows)


def learning_forgetting(paired: pd.DataFrame, axes: str = "nll") -> pd.DataFrame:
    """Per configuration (seeds aggregated): learning (gain on its target task) and
    forgetting (mean loss on the other tasks), from item-paired differences vs its base.

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
    for key, g in df.groupby(CONFIG, dropna=False):
        target = g["target_task" if axes == "accuracy" else "target_nll"].iloc[0]
        learn = g[g["task"] == target]
        other = g[g["task"] != target]
        if learn.empty or other.empty:
            continue
        rows.append(dict(zip(CONFIG, key), seeds=int(g["seeds"].iloc[0]),
                         target=target, learning=learn["gain"].iloc[0],
                         learning_low=learn["gain_low"].iloc[0], learning_high=learn["gain_high"].iloc[0],
                         forgetting=-other["gain"].mean(), **_mean_interval(-other["gain"], other),
                         retention_tasks=", ".join(other["task"]),
                         learned=bool(learn["significant"].iloc[0] and learn["gain"].iloc[0] > 0),
                         forgot_on=", ".join(other[other["significant"] & (other["gain"] < 0)]["task"]),
                         replayed=", ".join(t for t in other["task"]
                                            if t in str(g["replayed_nll"].iloc[0]).split(","))))
    out = pd.DataFrame(rows)
    if not out.empty:
        out["pareto"] = pareto_front(out)
    return out


def _mean_interval(values: pd.Series, rows: pd.DataFrame) -> dict:
    """An approximate 95% interval of the mean over tasks of per-task changes, each with its
    own paired interval: the tasks' items are independent, so the standard errors (taken
    from each interval's width) add in quadrature. Normal approximation, said in the book."""
    se = (rows["gain_high"] - rows["gain_low"]) / (2 * 1.96)
    half = 1.96 * np.sqrt((se ** 2).sum()) / len(rows)
    return {"forgetting_low": values.mean() - half, "forgetting_high": values.mean() + half}


PARETO_GROUP = ["model", "train_data", "train_size"]


def pareto_front(df: pd.DataFrame) -> pd.Series:
    """True where no other configuration of the same model, training data and size learns
    more and forgets less (point estimates)."""
    flags = pd.Series(False, index=df.index)
    for _, g in df.groupby(PARETO_GROUP, dropna=False):
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
