"""Results: one self-describing metrics.json per run, and the study tables built from them.

`outputs/results.csv` has one row per (run, task, metric); `outputs/runs.csv` one row
per run (status and cost). The analysis notebook reads only these two tables.
"""
from __future__ import annotations

import json
from pathlib import Path

from ftstudy.evaluate import metric_rows
from ftstudy.methods import REFERENCES, reference_for

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
                adapter=spec["adapter"],
                training=None if spec["method"] in REFERENCES else spec["training"],
                load=spec["load"], train_data=train_data, mix=mix, train_size=train_size,
                seed=seed, evaluation=evaluation)


def write_metrics(run_dir: str | Path, cell: dict, cost: dict, evaluation: dict,
                  data_dir=None) -> dict:
    """Write the run's metrics.json (cell, cost, learning curve, every metric) and env.json."""
    from ftstudy import data, provenance
    from ftstudy.train import dir_size_bytes

    run_dir = Path(run_dir)
    datasets = [data.TRAIN_SETS[n]["dataset"] for n in (cell.get("mix") or {})]
    datasets += [data.NLL_SOURCES[t][1] if t in data.NLL_SOURCES else t for t in evaluation["tasks"]]
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

    columns = ["task", "metric", "value", "stderr"]
    return pd.DataFrame(record["metrics"], columns=columns).set_index(["task", "metric"])


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


def _eval_key(cell: dict) -> str:
    return json.dumps([cell.get("model_name"), cell.get("evaluation")], sort_keys=True)


def _reference_key(cell: dict) -> tuple[str, str]:
    """(evaluation key, reference method) a run is compared against; a reference's own."""
    method = cell["method"]
    ref = method if method in REFERENCES else reference_for(method, cell.get("load"))
    return _eval_key(cell), ref


def paired_table(outputs: Path, records: list[dict]):
    """Item-paired differences: every run vs its base model, and methods vs each other
    within one (model, training data, size, seed). One row per pair, task and metric."""
    import itertools

    import pandas as pd

    from ftstudy import stats

    done = [r for r in records if r["status"] == "done" and r.get("cell")]
    base = {_reference_key(r["cell"]): r for r in done if r["cell"]["method"] in REFERENCES}
    pairs = []
    for r in done:
        ref = base.get(_reference_key(r["cell"]))
        if r["cell"]["method"] not in REFERENCES and ref is not None:
            pairs.append((ref, r, "vs base"))
    groups: dict = {}
    for r in done:
        c = r["cell"]
        if c["method"] not in REFERENCES:
            groups.setdefault((_eval_key(c), c.get("train_data"), c.get("train_size"), c.get("seed")), []).append(r)
    for members in groups.values():
        for a, b in itertools.combinations(sorted(members, key=lambda r: r["cell"]["method"]), 2):
            pairs.append((a, b, "vs method"))
    cache: dict = {}

    def samples(rec, task):
        key = (rec["run_id"], task)
        if key not in cache:
            cache[key] = stats.load_samples(outputs / "runs" / rec["run_id"], task)
        return cache[key]

    rows = []
    for ref, run, kind in pairs:
        for task in run["cell"]["evaluation"]["tasks"]:
            a, b = samples(ref, task), samples(run, task)
            for metric in sorted(set(a["metric"]) & set(b["metric"])):
                rows.append(dict(run_id=run["run_id"], method=run["cell"]["method"],
                                 reference_run_id=ref["run_id"], reference=ref["cell"]["method"],
                                 comparison=kind, model=run["cell"]["model_name"],
                                 train_data=run["cell"].get("train_data"),
                                 train_size=run["cell"].get("train_size"), seed=run["cell"].get("seed"),
                                 task=task, metric=metric, **stats.paired(a, b, metric)))
    return pd.DataFrame(rows)


def baselines_table(outputs: Path, records: list[dict]):
    """Chance, majority-answer baseline and answer distribution per multiple-choice result."""
    import pandas as pd

    from ftstudy import stats

    rows = []
    for r in records:
        if r["status"] != "done" or not r.get("cell"):
            continue
        for task in r["cell"]["evaluation"]["tasks"]:
            dist = stats.answer_distribution(stats.load_samples(outputs / "runs" / r["run_id"], task))
            if dist:
                shares = dist.pop("answer_shares")
                rows.append(dict(run_id=r["run_id"], model=r["cell"]["model_name"],
                                 method=r["cell"]["method"], train_data=r["cell"].get("train_data"),
                                 task=task, **dist,
                                 **{f"share_{k}": v for k, v in shares.items()}))
    return pd.DataFrame(rows)


def collect(outputs: str | Path):
    """Build and write `results.csv`, `runs.csv`, `paired.csv` and `baselines.csv`;
    returns (results, runs) DataFrames."""
    import pandas as pd

    outputs = Path(outputs)
    rows, runs = [], []
    records = run_records(outputs)
    for rec in records:
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
    paired_table(outputs, records).to_csv(outputs / "paired.csv", index=False)
    baselines_table(outputs, records).to_csv(outputs / "baselines.csv", index=False)
    return results, runs_df
