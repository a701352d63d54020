"""Analysis tables: scores, change vs the base model, cost. Plain pandas, no plotting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ftstudy import data

# The headline metric of each task (lm-eval's names, as in results.csv).
HEADLINE = {"gsm8k": "exact_match_flexible-extract", "hellaswag": "acc_norm",
            "mmlu_high_school_computer_science": "acc"}


def load(outputs: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    outputs = Path(outputs)
    results = pd.read_csv(outputs / "results.csv")
    runs = pd.read_csv(outputs / "runs.csv")
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
    base = results[results["method"] == "base"][["model", "task", "metric", "value", "stderr"]]
    tuned = results[results["method"] != "base"]
    merged = tuned.merge(base, on=["model", "task", "metric"], suffixes=("", "_base"))
    merged["delta"] = merged["value"] - merged["value_base"]
    merged["delta_stderr"] = np.sqrt(merged["stderr"].fillna(0) ** 2 +
                                     merged["stderr_base"].fillna(0) ** 2)
    merged["kind"] = [("learning" if target_task(td) == t else "forgetting")
                      for td, t in zip(merged["train_data"], merged["task"])]
    return merged


def target_task(train_data_label: str) -> str | None:
    """The eval task a training-data label targets: its largest component's target."""
    label = str(train_data_label)
    if label in data.TRAIN_SETS:
        return data.TRAIN_SETS[label]["target_task"]
    for name, spec in data.TRAIN_SETS.items():
        if label.startswith(name.split("_")[0]):
            return spec["target_task"]
    return None


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method (mean over runs): time, throughput, memory, parameters, artifact size."""
    done = runs[(runs["status"] == "done") & (runs["method"] != "base")].copy()
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
