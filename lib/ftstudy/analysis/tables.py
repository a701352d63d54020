"""The study tables, built once from the run folders of a grid (`collect`), in memory, as
frames with named columns (`Tables`); written as CSV only for readers. The analysis notebook
reads only these tables.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd


from ftstudy.compute.methods import REFERENCES
from ftstudy.compute.results import RUN_KEYS, read_json
from ftstudy.record import samples

COST_KEYS = ["wall_s", "train_wall_s", "curve_eval_wall_s", "eval_wall_s", "train_tokens", "tokens_per_s",
             "peak_rss_mb", "peak_anon_mb", "eval_peak_anon_mb", "eval_added_anon_mb",
             "eval_dequantised_mb", "peak_cuda_mb", "trainable_params", "total_params",
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
    dtype = cell.get("compute_dtype") or load.get("dtype", model.get("dtype"))  # training's, `auto` resolved
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
    """(reference, run, kind): each run and control vs its reference, runs on the 4-bit base
    vs the unquantised base, and methods vs each other within one (model, evaluation,
    training data, size, seed)."""
    import itertools

    refs = {reference_key(r["cell"]): r for r in done if r["cell"]["method"] in REFERENCES}
    pairs = []
    for r in done:
        if r["cell"]["method"] not in REFERENCES:  # ref None: no reference loaded and scored alike
            pairs.append((refs.get(reference_key(r["cell"])), r,
                          "control" if r["cell"].get("control") else "vs base"))
    # a run on the 4-bit base (and that base itself) against the unquantised base as well: its
    # net effect, quantisation included, which its own-reference change leaves out
    plain = {_eval_key(r["cell"]): r for r in done if r["cell"]["method"] in REFERENCES
             and not (r["cell"].get("load") or {}).get("quantize_4bit")}
    for r in done:
        c = r["cell"]
        if (c.get("load") or {}).get("quantize_4bit") and not c.get("control") and _eval_key(c) in plain:
            pairs.append((plain[_eval_key(c)], r, "vs unquantised base"))
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


def sample_reader(outputs: Path):
    """`(run id, task) -> samples.load_samples` of that run, each read once."""
    import functools

    return functools.lru_cache(maxsize=None)(lambda run_id, task: samples.load_samples(outputs / "runs" / run_id, task))


def paired_tables(outputs: Path, records: list[dict]):
    """Item-paired differences, three tables:

    - `paired`: one row per pair of runs, task and metric (per seed);
    - `aggregated`: one row per configuration (model, method, reference, data, size) over
      its seeds: with one seed the interval covers item sampling only; with several, one
      interval over seeds crossed with items (`stats.crossed`: training randomness included);
    - `refused`: runs not compared with their reference or another method, and why (their
      evaluation fingerprints differ, or no reference was loaded and scored the same way).

    `significant` is Holm-adjusted within each family (comparison kind; headline metrics).
    """
    import pandas as pd

    from ftstudy.record import fingerprint
    from ftstudy.analysis import stats
    from ftstudy.analysis.measures import verdict_metric

    done = [r for r in records if r["status"] == "done" and r.get("cell")]
    read = sample_reader(outputs)

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
            a, b = read(ref["run_id"], task), read(run["run_id"], task)
            shared = set(a["metric"]) & set(b["metric"])
            for metric in sorted(shared):
                row = dict(run_id=run["run_id"], reference_run_id=ref["run_id"], **ident,
                           seed=c.get("seed"), task=task, metric=metric,
                           headline=metric == verdict_metric(task, shared), **stats.paired(a, b, metric))
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
            agg_rows.append({**base, **{k: first.get(k) for k in ("mean_diff", "ci_low", "ci_high", "p_value", "test",
                             "gained", "lost", "se", "df", "item_var")}, "interval": "items"})
        else:  # the same items in every seed (one sample_seed per grid): align them by doc id
            common = sorted(set.intersection(*(set(d.index) for _, d in items)))
            base["n"] = len(common)
            agg_rows.append({**base, **stats.crossed([d.loc[common].to_numpy() for _, d in items]),
                             "interval": "seeds x items"})
    aggregated = stats.adjust(pd.DataFrame(agg_rows), family) if agg_rows else pd.DataFrame()
    return paired, format_share(aggregated), pd.DataFrame(refused)


def format_share(aggregated):
    """On a GSM8K solution task's `format_nll` rows, `format_share`: the part of the change in
    the solution's nats (its `nll` row, same comparison) that lies in the annotation format's
    bytes (`ftstudy.compute.nll`). Descriptive, no verdict: a ratio of two paired mean changes."""
    if aggregated.empty or not (aggregated["metric"] == "format_nll").any():
        return aggregated
    keys = ["comparison", "model", "method", "reference", "train_data", "train_size", "replayed_nll", "task"]
    ident = aggregated[keys].apply(lambda r: "|".join(map(str, r)), axis=1)  # one comparison, whatever its metric
    whole = dict(zip(ident[aggregated["metric"] == "nll"], aggregated.loc[aggregated["metric"] == "nll", "mean_diff"]))
    out = aggregated.copy()
    for i in out.index[out["metric"] == "format_nll"]:
        total = whole.get(ident[i])
        out.loc[i, "format_share"] = out.loc[i, "mean_diff"] / total if total else np.nan
    return out


FACTORS = ("train_size", "train_data", "model", "method")


class ContrastKey(NamedTuple):
    """One factor changed from `start` to `end`, the other factors `fixed` (name, value pairs
    in FACTORS order), on one task's metric."""
    factor: str
    fixed: tuple
    start: object
    end: object
    task: str
    metric: str
# What a pooled comparison records: the change, its interval and test, and the variance parts
# the detectable change and the planner need (seed and residual variance: several seeds only).
POOLED = ("mean_diff", "ci_low", "ci_high", "p_value", "test", "se", "df", "seed_var", "item_var", "resid_var")


def contrasts_table(outputs: Path, records: list[dict], order: dict | None = None):
    """One factor changed, everything else equal: per pair of runs that differ in exactly one
    of training size, training data, base model or method (same seed), and per task, the
    item-paired difference of their changes vs their own references (B's change minus A's,
    in the metric's units). A difference of changes, not of final scores: QLoRA's reference
    is the 4-bit base, so "learned more" must not count the quantisation's own cost. With
    several seeds, pooled like `aggregated` (seeds crossed with items). Holm's
    correction within each factor. `order` (factor: values, e.g. in the grid's order) says
    which value is A: the earlier one (else the smaller size, or the first by name). The
    data-size, replay, base-model and "learned most" answers rest on it. Seeds are paired (a
    pair of runs shares its seed): a comparison with one shared seed has an items-only
    interval and is never called separated (`verdicts.decide`)."""
    import itertools

    import pandas as pd

    from ftstudy.record import fingerprint
    from ftstudy.analysis import stats
    from ftstudy.analysis.measures import verdict_metric

    done = [r for r in records if r["status"] == "done" and r.get("cell")]
    refs = {reference_key(r["cell"]): r for r in done if r["cell"]["method"] in REFERENCES}
    runs = [r for r in done if r["cell"]["method"] not in REFERENCES and not r["cell"].get("control")
            and reference_key(r["cell"]) in refs]
    read = sample_reader(outputs)

    def metrics(run, task):
        """The metrics a run and its reference both logged on a task."""
        ref = refs[reference_key(run["cell"])]
        return set(read(ref["run_id"], task)["metric"]) & set(read(run["run_id"], task)["metric"])

    changes: dict = {}

    def change(run, task, metric):
        key = (run["run_id"], task, metric)
        if key not in changes:
            ref = refs[reference_key(run["cell"])]
            if (fingerprint.evaluation_differences(ref.get("fingerprint"), run.get("fingerprint"))
                    or metric not in metrics(run, task)):  # not scored alike: never compared (see `refused`)
                changes[key] = pd.Series(dtype=float)
            else:
                ids, x, y = stats.item_differences(read(ref["run_id"], task), read(run["run_id"], task), metric)
                changes[key] = pd.Series(np.asarray(y) - np.asarray(x), index=ids, dtype=float)
        return changes[key]

    def axes(r):
        c = r["cell"]
        return {"model": c["model_name"], "train_data": c.get("train_data"),
                "train_size": c.get("train_size"), "method": c["method"]}

    def rank(factor, value):
        known = (order or {}).get(factor, [])
        return (known.index(value) if value in known else len(known),
                value if factor == "train_size" else str(value))

    groups: dict = {}
    for a, b in itertools.combinations(runs, 2):
        if a["cell"].get("seed") != b["cell"].get("seed"):
            continue
        xa, xb = axes(a), axes(b)
        changed = [f for f in FACTORS if xa[f] != xb[f]]
        if len(changed) != 1 or fingerprint.evaluation_differences(a.get("fingerprint"), b.get("fingerprint")):
            continue
        factor = changed[0]
        if rank(factor, xb[factor]) < rank(factor, xa[factor]):
            a, b, xa, xb = b, a, xb, xa
        for task in a["cell"]["evaluation"]["tasks"]:
            if task not in b["cell"]["evaluation"]["tasks"]:
                continue
            metric = verdict_metric(task, metrics(a, task) & metrics(b, task))
            da, db = change(a, task, metric), change(b, task, metric)
            common = da.index.intersection(db.index)
            if not len(common):
                continue
            key = ContrastKey(factor, tuple((f, xa[f]) for f in FACTORS if f != factor), xa[factor], xb[factor],
                              task, metric)
            groups.setdefault(key, []).append((a, b, da.loc[common], db.loc[common]))
    rows = []
    for key, pairs in groups.items():
        common = sorted(set.intersection(*(set(da.index) for _, _, da, _ in pairs)))
        diffs = [(db.loc[common] - da.loc[common]).to_numpy() for _, _, da, db in pairs]
        pooled = stats.mean_difference(diffs[0]) if len(diffs) == 1 else stats.crossed(diffs)
        rows.append(dict(factor=key.factor, **dict(key.fixed), **{"from": key.start, "to": key.end}, task=key.task,
                         metric=key.metric,
                         seeds=len(pairs), n=len(common),
                         run_id_from=",".join(a["run_id"] for a, _, _, _ in pairs),
                         run_id_to=",".join(b["run_id"] for _, b, _, _ in pairs),
                         change_from=float(np.mean([da.loc[common].mean() for _, _, da, _ in pairs])),
                         change_to=float(np.mean([db.loc[common].mean() for _, _, _, db in pairs])),
                         **{k: pooled.get(k) for k in POOLED}))
    rows += _interactions(groups, rank)
    cols = ["factor", *FACTORS, "from", "to", "task", "metric", "seeds", "n", "run_id_from", "run_id_to",
            "change_from", "change_to", *POOLED]
    df = pd.DataFrame(rows, columns=cols)
    family = ["factor", "model", "train_data", "train_size"]  # one question in one condition
    return stats.adjust(df, family) if not df.empty else df.assign(p_adjusted=[], significant=[])


def _interactions(groups: dict, rank) -> list[dict]:
    """Does a factor change the answer? For two methods compared in two conditions that differ
    in one factor (same seeds), the change of their gap: (B - A under the second value) minus
    (B - A under the first), item by item, each method's change against its own reference.
    Rows `factor` = "method x <factor>", `method` = "B - A"."""
    import itertools

    from ftstudy.analysis import stats

    method_groups = {k: v for k, v in groups.items() if k.factor == "method"}
    rows = []
    for k0, k1 in itertools.combinations(method_groups, 2):
        if (k0.start, k0.end, k0.task, k0.metric) != (k1.start, k1.end, k1.task, k1.metric):  # same methods, task, metric
            continue
        differ = [name for (name, v0), (_, v1) in zip(k0.fixed, k1.fixed) if v0 != v1]
        if len(differ) != 1:
            continue
        factor = differ[0]
        if rank(factor, dict(k1.fixed)[factor]) < rank(factor, dict(k0.fixed)[factor]):
            k0, k1 = k1, k0
        by_seed0 = {a["cell"].get("seed"): (db - da) for a, _, da, db in method_groups[k0]}
        by_seed1 = {a["cell"].get("seed"): (db - da) for a, _, da, db in method_groups[k1]}
        seeds = sorted(set(by_seed0) & set(by_seed1), key=str)
        if not seeds:
            continue
        common = sorted(set.intersection(*(set(by_seed0[s].index) & set(by_seed1[s].index) for s in seeds)))
        diffs = [(by_seed1[s].loc[common] - by_seed0[s].loc[common]).to_numpy() for s in seeds]
        pooled = stats.mean_difference(diffs[0]) if len(diffs) == 1 else stats.crossed(diffs)
        fixed = {name: value for name, value in k0.fixed if name != factor}
        rows.append(dict(factor=f"method x {factor}", method=f"{k0.end} - {k0.start}", **fixed,
                         **{"from": dict(k0.fixed)[factor], "to": dict(k1.fixed)[factor]}, task=k0.task,
                         metric=k0.metric,
                         seeds=len(seeds), n=len(common),
                         run_id_from=",".join(r["run_id"] for a, b, _, _ in method_groups[k0] for r in (a, b)),
                         run_id_to=",".join(r["run_id"] for a, b, _, _ in method_groups[k1] for r in (a, b)),
                         change_from=float(np.mean([by_seed0[s].loc[common].mean() for s in seeds])),
                         change_to=float(np.mean([by_seed1[s].loc[common].mean() for s in seeds])),
                         **{k: pooled.get(k) for k in POOLED}))
    return rows


def baselines_table(outputs: Path, records: list[dict]):
    """Chance, majority-answer baseline and answer distribution per multiple-choice result."""
    import pandas as pd

    from ftstudy.analysis import stats

    rows = []
    for r in records:
        if r["status"] != "done" or not r.get("cell"):
            continue
        for task in r["cell"]["evaluation"]["tasks"]:
            dist = stats.answer_distribution(samples.load_samples(outputs / "runs" / r["run_id"], task))
            if dist:
                shares = dist.pop("answer_shares")
                rows.append(dict(run_id=r["run_id"], model=r["cell"]["model_name"],
                                 method=r["cell"]["method"], train_data=r["cell"].get("train_data"),
                                 task=task, **dist,
                                 **{f"share_{k}": v for k, v in shares.items()}))
    return pd.DataFrame(rows)


def _items_digest(items: dict | None) -> str | None:
    """Which items a run scored, per task, as a short digest (JSON {task: sha256[:12]}): runs
    compare item by item only where these agree."""
    import hashlib

    if not items:
        return None
    return json.dumps({task: hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:12]
                       for task, ids in sorted(items.items())})


def _loss_span(curve) -> dict:
    """The training loss at the first logged step and its highest value: a run whose loss
    jumps far above where it started diverged (its rate is too high for that model)."""
    losses = [p["loss"] for p in curve or [] if p.get("loss") is not None]
    return {"loss_first": losses[0] if losses else None, "loss_max": max(losses) if losses else None}


# The study's tables, in the order they are built; each is written as `<name>.csv` for readers.
NAMES = ("results", "runs", "paired", "aggregated", "refused", "outside_grid", "baselines", "contrasts",
         "tuning", "tuning_pairs", "controls", "curve", "matched", "matched_between", "detectable", "verdicts")


@dataclass
class Tables:
    """Every table of a study, built once from its run folders (`collect`) and handed on in
    memory to the answers, the verdicts and the book; `write` leaves each as a CSV for readers
    (the analysis notebook, people, a committed results folder)."""
    results: pd.DataFrame     # one row per (run, task, metric): the scores
    runs: pd.DataFrame        # one row per run: status and cost
    paired: pd.DataFrame      # item-paired differences per pair of runs
    aggregated: pd.DataFrame  # the same per configuration, seeds pooled: what verdicts rest on
    refused: pd.DataFrame     # comparisons refused: evaluation fingerprints differ
    outside_grid: pd.DataFrame  # run folders this grid does not produce: listed, never used
    baselines: pd.DataFrame   # chance, majority answer, answer distribution
    contrasts: pd.DataFrame   # one factor changed (size, data, model, method), item-paired
    tuning: pd.DataFrame      # learning-rate trials beside each method's configured rate
    tuning_pairs: pd.DataFrame  # methods against each other on validation items, per rate kind
    controls: pd.DataFrame    # zero-step controls against their references
    curve: pd.DataFrame       # learning and forgetting along training
    matched: pd.DataFrame     # forgetting at matched learning, per method
    matched_between: pd.DataFrame  # the same between methods
    detectable: pd.DataFrame  # the smallest change each comparison would detect
    verdicts: pd.DataFrame    # every comparison's verdict, decided by `verdicts.decide`

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in NAMES}

    def write(self, outputs: str | Path) -> None:
        outputs = Path(outputs)
        outputs.mkdir(parents=True, exist_ok=True)
        for name, df in self.as_dict().items():
            df.to_csv(outputs / f"{name}.csv", index=False)

    @classmethod
    def read(cls, outputs: str | Path) -> "Tables":
        """The tables as written (for readers such as the analysis notebook); a missing or
        empty file reads as an empty table."""
        def one(name):
            path = Path(outputs) / f"{name}.csv"
            return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()
        return cls(**{name: one(name) for name in NAMES})


def collect(outputs: str | Path, cells: list[dict] | None = None, configured_rates: dict | None = None) -> Tables:
    """Build every study table of a grid from its run folders, in memory (nothing is written:
    see `Tables.write`). `tuning` holds the learning-rate trials, kept apart from the study's
    runs, beside each method's `configured_rates`; `contrasts` is described in `contrasts_table`.

    With `cells` (a grid's expansion) exactly those runs are used; other run folders in
    `outputs/runs` (another params file, an older setting) are listed in `outside_grid`,
    never mixed in.
    """
    from ftstudy.analysis import detectable, verdicts, views
    from ftstudy.planning import tuning

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
                     "eval_dtype": rec.get("eval_dtype"), "eval_items": _items_digest(rec.get("eval_items")),
                     **{k: rec.get(k) for k in COST_KEYS},  # wall_s: the whole cell, from status.json
                     **_loss_span(rec.get("loss_curve"))})
        if rec["status"] != "done":
            continue
        for m in rec.get("metrics", []):
            task_cfg = cell.get("evaluation", {}).get("tasks", {}).get(m["task"]) or {}
            rows.append({**ident, **m, "limit": task_cfg.get("limit"),
                         "num_fewshot": task_cfg.get("num_fewshot")})
    results = pd.DataFrame(rows, columns=RUN_KEYS + ["task", "metric", "value", "stderr",
                                                     "limit", "num_fewshot"])
    runs_df = pd.DataFrame(runs, columns=RUN_KEYS + ["status", "error", "learning_rate", "steps", "examples_kept",
                                                     "examples_dropped_too_long", "eval_dtype", "eval_items"]
                           + COST_KEYS + ["loss_first", "loss_max"])
    paired, aggregated, refused = paired_tables(outputs, records)
    order = {f: list(dict.fromkeys(c.get("model_name") if f == "model" else c.get(f) for c in cells
                                   if c.get("method") not in REFERENCES)) for f in FACTORS} if cells else None
    contrasts = contrasts_table(outputs, records, order)
    curve = views.curve_table(outputs, runs_df)
    matched, between = (views.matched_forgetting(outputs, curve) if not curve.empty
                        else (pd.DataFrame(), pd.DataFrame()))
    mde = detectable.detectable(aggregated, contrasts)
    cited = {"aggregated": aggregated, "contrasts": contrasts, "runs": runs_df, "matched": matched,
             "matched_between": between, "detectable": mde}
    return Tables(results=results, runs=runs_df, paired=paired, aggregated=aggregated, refused=refused,
                  outside_grid=pd.DataFrame(outside, columns=["run_id", "method", "model", "status"]),
                  baselines=baselines_table(outputs, records), contrasts=contrasts, tuning=trials,
                  tuning_pairs=views.tuning_pairs(outputs, trials), controls=views.controls(outputs, paired),
                  curve=curve, matched=matched, matched_between=between, detectable=mde,
                  verdicts=verdicts.table(cited))
