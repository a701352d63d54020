"""A run's record: one self-describing metrics.json per run (its cell, cost, every metric),
written by the notebook that ran it. The study tables built from these are `ftstudy.analysis.tables`.
"""
from __future__ import annotations

import json
from pathlib import Path

from ftstudy.compute.evaluate import metric_rows
from ftstudy.compute.methods import REFERENCES

RUN_KEYS = ["run_id", "model", "method", "control", "train_data", "train_size", "seed"]


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def cell(run_id: str, spec: dict, model: dict, evaluation: dict, train_data: str | None = None,
         mix: dict | None = None, train_size: int = 0, seed: int | None = None) -> dict:
    """The resolved parameters of a run, as recorded in its metrics.json: with the dtype the
    model was loaded in on this machine and the one it was evaluated in (`auto` resolved, so a
    run pairs only with a reference evaluated alike), whether it is a zero-step control, and
    which task its training data targets (a mix's largest component, whatever its label)."""
    from ftstudy.compute import data, evaluate

    evaluation = dict(evaluation, dtype=evaluate.eval_dtype(evaluation))
    reference = spec["method"] in REFERENCES
    return dict(run_id=run_id, method=spec["method"], model_name=model["name"], model=model,
                adapter=spec["adapter"], training=None if reference else spec["training"],
                load=spec["load"], compute_dtype=spec.get("compute_dtype"),
                control=not reference and spec["training"]["max_steps"] == 0,
                train_data=train_data, mix=mix, train_size=train_size, seed=seed,
                evaluation=evaluation, **data.targets(mix))


def write_metrics(run_dir: str | Path, cell: dict, cost: dict, evaluation: dict,
                  data_dir=None, data_counts: dict | None = None) -> dict:
    """Write the run's metrics.json (cell, cost, learning curve, every metric, the items
    scored, the training examples kept and dropped) and env.json."""
    from ftstudy.compute import data, provenance
    from ftstudy.compute.train import dir_size_bytes

    run_dir = Path(run_dir)
    datasets = [data.TRAIN_SETS[n]["dataset"] for n in (cell.get("mix") or {})]
    datasets += [data.task_dataset(t) for t in evaluation["tasks"]]
    write_json(run_dir / "env.json", provenance.environment(cell.get("seed"), datasets, data_dir,
                                                            cell.get("compute_dtype")))
    record = dict(cell=cell, **{k: cell.get(k) for k in RUN_KEYS if k != "model"},
                  model=cell["model_name"], **cost, eval_wall_s=evaluation["wall_s"],
                  eval_peak_anon_mb=evaluation.get("peak_anon_mb"), eval_added_anon_mb=evaluation.get("added_anon_mb"),
                  eval_dequantised_mb=evaluation.get("dequantised_mb"),
                  eval_dtype=evaluation.get("dtype"), eval_items=evaluation.get("items"),
                  eval_scoring=evaluation.get("scoring"),
                  training_data=data_counts, metrics=metric_rows(evaluation["tasks"]))
    record["disk_bytes"] = dir_size_bytes(run_dir)
    write_json(run_dir / "metrics.json", record)
    return record


def scores_table(record: dict):
    """The run's metrics as a small DataFrame, for display at the end of a notebook."""
    import pandas as pd

    columns = ["task", "metric", "value", "stderr"]
    return pd.DataFrame(record["metrics"], columns=columns).set_index(["task", "metric"])
