"""Results: one self-describing metrics.json per run, and the study tables built from them.

`outputs/results.csv` has one row per (run, task, metric); `outputs/runs.csv` one row
per run (status and cost). The analysis notebook reads only these two tables.
"""
from __future__ import annotations

import json
from pathlib import Path

from ftstudy.evaluate import metric_rows

RUN_KEYS = ["run_id", "model", "method", "train_data", "train_size", "seed"]
COST_KEYS = ["train_wall_s", "eval_wall_s", "train_tokens", "tokens_per_s", "peak_rss_mb",
             "peak_cuda_mb", "trainable_params", "total_params", "artifact_bytes", "disk_bytes",
             "train_loss"]


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def cell(run_id: str, spec: dict, model: dict, evaluation: dict, train_data: str | None = None,
         mix: dict | None = None, train_size: int = 0, seed: int | None = None) -> dict:
    """The resolved parameters of a run, as recorded in its metrics.json."""
    return dict(run_id=run_id, method=spec["method"], model_name=model["name"], model=model,
                adapter=spec["adapter"], training=spec["training"] if spec["method"] != "base" else None,
                load=spec["load"], train_data=train_data, mix=mix, train_size=train_size,
                seed=seed, evaluation=evaluation)


def write_metrics(run_dir: str | Path, cell: dict, cost: dict, evaluation: dict,
                  data_dir=None) -> dict:
    """Write the run's metrics.json (cell, cost, learning curve, every metric) and env.json."""
    from ftstudy import provenance
    from ftstudy.data import TRAIN_SETS
    from ftstudy.train import dir_size_bytes

    run_dir = Path(run_dir)
    datasets = [TRAIN_SETS[n]["dataset"] for n in (cell.get("mix") or {})]
    datasets += list(evaluation["tasks"])
    write_json(run_dir / "env.json", provenance.environment(cell.get("seed"), datasets, data_dir))
    record = dict(cell=cell, **{k: cell.get(k) for k in RUN_KEYS if k != "model"},
                  model=cell["model_name"], **cost, eval_wall_s=evaluation["wall_s"],
                  metrics=metric_rows(evaluation["tasks"]))
    record["disk_bytes"] = dir_size_bytes(run_dir)
    write_json(run_dir / "metrics.json", record)
    return record


def scores_table(record: dict):
    """The run's metrics as a small DataFrame, for display at the end of a notebook."""
    import pandas as pd

    return pd.DataFrame(record["metrics"]).set_index(["task", "metric"])


def run_records(outputs: str | Path) -> list[dict]:
    """status.json (+ metrics.json when done) of every finished or failed run folder."""
    records = []
    runs = Path(outputs) / "runs"
    for status_file in sorted(runs.glob("*/status.json")):
        if status_file.parent.name.startswith("."):
            continue
        status = read_json(status_file)
        metrics_file = status_file.parent / "metrics.json"
        metrics = read_json(metrics_file) if metrics_file.is_file() else {}
        records.append({**status, **{k: v for k, v in metrics.items() if k != "status"}})
    return records


def collect(outputs: str | Path):
    """Build and write `results.csv` and `runs.csv`; returns (results, runs) DataFrames."""
    import pandas as pd

    outputs = Path(outputs)
    rows, runs = [], []
    for rec in run_records(outputs):
        cell = rec.get("cell", {})
        ident = {k: cell.get(k, rec.get(k)) for k in RUN_KEYS}
        ident["model"] = cell.get("model_name", rec.get("model"))
        ident["run_id"] = rec["run_id"]
        runs.append({**ident, "status": rec["status"], "error": rec.get("error"),
                     **{k: rec.get(k) for k in COST_KEYS}})
        if rec["status"] != "done":
            continue
        for m in rec.get("metrics", []):
            task_cfg = cell.get("evaluation", {}).get("tasks", {}).get(m["task"]) or {}
            rows.append({**ident, **m, "limit": task_cfg.get("limit"),
                         "num_fewshot": task_cfg.get("num_fewshot")})
    results = pd.DataFrame(rows, columns=RUN_KEYS + ["task", "metric", "value", "stderr",
                                                     "limit", "num_fewshot"])
    runs_df = pd.DataFrame(runs, columns=RUN_KEYS + ["status", "error"] + COST_KEYS)
    outputs.mkdir(parents=True, exist_ok=True)
    results.to_csv(outputs / "results.csv", index=False)
    runs_df.to_csv(outputs / "runs.csv", index=False)
    return results, runs_df
