"""The study tables, built from the run folders of a grid.

`outputs/results.csv` has one row per (run, task, metric); `outputs/runs.csv` one row
per run (status and cost); `paired.csv`, `aggregated.csv`, `refused.csv`, `baselines.csv`
and `tuning.csv` are described in `collect`. The analysis notebook reads only these tables.
"""
from __future__ import annotations

import json
from pathlib import Path

from ftstudy.methods import REFERENCES
from ftstudy.results import RUN_KEYS, read_json

COST_KEYS = ["wall_s", "train_wall_s", "curve_eval_wall_s", "eval_wall_s", "train_tokens", "tokens_per_s",
             "peak_rss_mb", "peak_anon_mb", "peak_cuda_mb", "trainable_params", "total_params",
             "artifact_bytes", "disk_bytes", "train_loss"]


def run_records(outputs: str | Path, run_ids=None) -> list[dict]:
    """status.json (+ metrics.json when done, + fingerprint.json) of every finished or
    failed run folder, or only of `run_ids` when given."""
    records = []
    runs = Path(outputs) / "runs"
    for status_file in sorted(runs.glob("*/status.json")):
        folder = status_file.parent
        if folder.name.startswith(".") or (run_ids is not None and folder.name not in run_ids):
            continue
        status = read_json(status_file)
        metrics_file = folder / "metrics.json"
        metrics = read_json(metrics_file) if metrics_file.is_file() else {}
        fp, grid_cell = folder / "fingerprint.json", folder / "cell.json"
        records.append({**status, **{k: v for k, v in metrics.items() if k != "status"},
                        "fingerprint": read_json(fp) if fp.is_file() else None,
                        "grid_cell": read_json(grid_cell) if grid_cell.is_file() else None})
    return records


def _model_key(cell: dict) -> list:
    model = cell.get("model") if isinstance(cell.get("model"), dict) else {}
    load = cell.get("load") or {}
    dtype = cell.get("compute_dtype") or load.get("dtype", model.get("dtype"))  # as loaded, `auto` resolved
    return [model.get("source") or cell.get("model_name"), dtype, cell.get("evaluation")]


def _eval_key(cell: dict) -> str:
    """Runs comparable with each other: same model source and dtype, same evaluation."""
    return json.dumps(_model_key(cell), sort_keys=True, default=str)


def reference_key(cell: dict) -> str:
    """What a run shares with its reference: model source and dtype, 4-bit loading or not,
    and the evaluation settings (never the model's display name alone)."""
    quantised = bool((cell.get("load") or {}).get("quantize_4bit"))
    return json.dumps([*_model_key(cell), quantised], sort_keys=True, default=str)


def _pairs(done: list[dict]) -> list[tuple[dict, dict, str]]:
    """(reference, run, kind): each run and control vs its reference, and methods vs each
    other within one (model, evaluation, training data, size, seed)."""
    import itertools

    refs = {reference_key(r["cell"]): r for r in done if r["cell"]["method"] in REFERENCES}
    pairs = []
    for r in done:
        if r["cell"]["method"] not in REFERENCES:  # ref None: no reference loaded and scored alike
            pairs.append((refs.get(reference_key(r["cell"])), r,
                          "control" if r["cell"].get("control") else "vs base"))
    groups: dict = {}
    for r in done:
        c = r["cell"]
        if c["method"] not in REFERENCES and not c.get("control"):
            key = (_eval_key(c), c.get("train_data"), c.get("train_size"), c.get("seed"))
            groups.setdefault(key, []).append(r)
    for members in groups.values():
        for a, b in itertools.combinations(sorted(members, key=lambda r: r["cell"]["method"]), 2):
            pairs.append((a, b, "vs method"))
    return pairs


def paired_tables(outputs: Path, records: list[dict]):
    """Item-paired differences, three tables:

    - `paired`: one row per pair of runs, task and metric (per seed);
    - `aggregated`: one row per configuration (model, method, reference, data, size) over
      its seeds: with one seed the interval covers item sampling only; with several, a
      bootstrap over seeds then items;
    - `refused`: runs not compared with their reference or another method, and why (their
      evaluation fingerprints differ, or no reference was loaded and scored the same way).

    `significant` is Holm-adjusted within each family (comparison kind; headline metrics).
    """
    import pandas as pd

    from ftstudy import fingerprint, stats
    from ftstudy.evaluate import headline_metric

    done = [r for r in records if r["status"] == "done" and r.get("cell")]
    cache: dict = {}

    def samples(rec, task):
        key = (rec["run_id"], task)
        if key not in cache:
            cache[key] = stats.load_samples(outputs / "runs" / rec["run_id"], task)
        return cache[key]

    rows, refused, per_seed = [], [], {}
    for ref, run, kind in _pairs(done):
        if ref is None:
            refused.append(dict(run_id=run["run_id"], reference_run_id=None, comparison=kind,
                                method=run["cell"]["method"], reference=None,
                                differs="no reference run with the same model source, dtype, 4-bit "
                                        "loading and evaluation settings"))
            continue
        why = fingerprint.evaluation_differences(ref.get("fingerprint"), run.get("fingerprint"))
        if why:
            refused.append(dict(run_id=run["run_id"], reference_run_id=ref["run_id"], comparison=kind,
                                method=run["cell"]["method"], reference=ref["cell"]["method"],
                                differs="evaluation fingerprints differ: " + "; ".join(why)))
            continue
        c = run["cell"]
        ident = dict(comparison=kind, model=c["model_name"], method=c["method"],
                     reference=ref["cell"]["method"], train_data=c.get("train_data"),
                     train_size=c.get("train_size"), target_task=c.get("target_task"),
                     target_nll=c.get("target_nll"),
                     replayed_nll=",".join(c.get("replayed_nll") or []))
        for task in c["evaluation"]["tasks"]:
            a, b = samples(ref, task), samples(run, task)
            for metric in sorted(set(a["metric"]) & set(b["metric"])):
                row = dict(run_id=run["run_id"], reference_run_id=ref["run_id"], **ident,
                           seed=c.get("seed"), task=task, metric=metric,
                           headline=metric == headline_metric(task), **stats.paired(a, b, metric))
                rows.append(row)
                ids, x, y = stats.item_differences(a, b, metric)
                key = tuple(ident.items()) + (("task", task), ("metric", metric))
                per_seed.setdefault(key, []).append((row, pd.Series(y - x, index=ids)))
    family = ["comparison", "headline"]
    paired = stats.adjust(pd.DataFrame(rows), family) if rows else pd.DataFrame()
    agg_rows = []
    for key, items in per_seed.items():
        first = items[0][0]
        base = dict(key, headline=first["headline"], seeds=len(items), n=int(first["n"]))
        if len(items) == 1:
            agg_rows.append({**base, **{k: first.get(k) for k in ("mean_diff", "ci_low", "ci_high",
                             "p_value", "test", "gained", "lost")}, "interval": "items"})
        else:  # the same items in every seed (one sample_seed per grid): align them by doc id
            common = sorted(set.intersection(*(set(d.index) for _, d in items)))
            base["n"] = len(common)
            agg_rows.append({**base, **stats.seeds_then_items([d.loc[common].to_numpy() for _, d in items]),
                             "interval": "seeds then items"})
    aggregated = stats.adjust(pd.DataFrame(agg_rows), family) if agg_rows else pd.DataFrame()
    return paired, aggregated, pd.DataFrame(refused)


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


def collect(outputs: str | Path, cells: list[dict] | None = None, configured_rates: dict | None = None):
    """Build and write the study tables of a grid: `results.csv`, `runs.csv`, `paired.csv`,
    `aggregated.csv`, `refused.csv`, `baselines.csv`, `tuning.csv` (learning-rate trials,
    kept apart from the study's runs, beside each method's `configured_rates`); returns
    (results, runs) DataFrames.

    With `cells` (a grid's expansion) exactly those runs are used; other run folders in
    `outputs/runs` (another params file, an older setting) are listed in
    `outside_grid.csv`, never mixed in.
    """
    import pandas as pd

    from ftstudy import tuning

    outputs = Path(outputs)
    rows, runs = [], []
    ids = None if cells is None else {c["run_id"] for c in cells}
    records = run_records(outputs, ids)
    trials = tuning.table(records, configured_rates)
    records = [r for r in records if not (r.get("grid_cell") or {}).get("trial")]
    outside = [] if ids is None else [
        {k: r.get(k) for k in ("run_id", "method", "model", "status")}
        for r in run_records(outputs) if r["run_id"] not in ids]
    for rec in records:
        cell = rec.get("cell", {})
        ident = {k: cell.get(k, rec.get(k)) for k in RUN_KEYS}
        ident["model"] = cell.get("model_name", rec.get("model"))
        ident["run_id"] = rec["run_id"]
        ident["control"] = bool(cell.get("control"))
        counts = (rec.get("training_data") or {}).get("sets", {})
        training = cell.get("training") or {}
        runs.append({**ident, "status": rec["status"], "error": rec.get("error"),
                     "learning_rate": training.get("learning_rate"), "steps": (rec.get("training") or training).get("max_steps"),
                     "examples_kept": sum(c["kept"] for c in counts.values()) if counts else None,
                     "examples_dropped_too_long": (sum(c["dropped_too_long"] for c in counts.values())
                                                   if counts else None),
                     **{k: rec.get(k) for k in COST_KEYS}})  # wall_s: the whole cell, from status.json
        if rec["status"] != "done":
            continue
        for m in rec.get("metrics", []):
            task_cfg = cell.get("evaluation", {}).get("tasks", {}).get(m["task"]) or {}
            rows.append({**ident, **m, "limit": task_cfg.get("limit"),
                         "num_fewshot": task_cfg.get("num_fewshot")})
    results = pd.DataFrame(rows, columns=RUN_KEYS + ["task", "metric", "value", "stderr",
                                                     "limit", "num_fewshot"])
    runs_df = pd.DataFrame(runs, columns=RUN_KEYS + ["status", "error", "learning_rate", "steps", "examples_kept",
                                                     "examples_dropped_too_long"] + COST_KEYS)
    outputs.mkdir(parents=True, exist_ok=True)
    results.to_csv(outputs / "results.csv", index=False)
    runs_df.to_csv(outputs / "runs.csv", index=False)
    paired, aggregated, refused = paired_tables(outputs, records)
    paired.to_csv(outputs / "paired.csv", index=False)
    aggregated.to_csv(outputs / "aggregated.csv", index=False)
    refused.to_csv(outputs / "refused.csv", index=False)
    pd.DataFrame(outside, columns=["run_id", "method", "model", "status"]).to_csv(
        outputs / "outside_grid.csv", index=False)
    baselines_table(outputs, records).to_csv(outputs / "baselines.csv", index=False)
    trials.to_csv(outputs / "tuning.csv", index=False)
    return results, runs_df
