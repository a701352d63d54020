"""Analysis tables: scores, controls, learning vs forgetting, cost. Plain pandas, no plotting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ftstudy.analysis import stats, verdicts
from ftstudy.planning import tuning
from ftstudy.compute.evaluate import HEADLINE, headline_metric
from ftstudy.compute.methods import REFERENCES
from ftstudy.analysis.stats import LOWER_IS_BETTER
from ftstudy.record import samples

BASE_LABEL = "(base model)"
CONTROL_LABEL = "(control: 0 steps)"


def labelled(results: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, runs) as tables show them: scores of the grid's runs and references
    (zero-step controls are reported apart, see `controls`), and every run's status and cost,
    the references' and controls' training data labelled."""
    results, runs = results.copy(), runs.copy()
    for df in (results, runs):  # the base model has no training data: label it for tables
        df.loc[df["method"].isin(REFERENCES), "train_data"] = BASE_LABEL
        df.loc[df["control"].fillna(False).astype(bool), "train_data"] = CONTROL_LABEL
    return results[~results["control"].fillna(False).astype(bool)], runs


def headline(results: pd.DataFrame) -> pd.DataFrame:
    keep = results.apply(lambda r: HEADLINE.get(r["task"]) == r["metric"], axis=1)
    return results[keep] if len(results) else results


def cost_table(runs: pd.DataFrame, tuning: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method (mean over runs): time, throughput, memory, parameters, artifact size; with
    a tuning summary, the wall time of a method's whole learning-rate sweep beside one run's."""
    done = runs[(runs["status"] == "done") & ~runs["method"].isin(REFERENCES)
                & ~runs["control"].fillna(False).astype(bool)].copy()
    if done.empty:
        return done
    done["trainable_%"] = 100 * done["trainable_params"] / done["total_params"]
    done["artifact_MB"] = done["artifact_bytes"] / 1e6
    done["peak_mb"] = peak_memory(done)
    cols = {"train_wall_s": "train time (s)", "tokens_per_s": "tokens/s",
            "peak_mb": "peak memory in training (MiB)", "trainable_params": "trainable params",
            "trainable_%": "trainable %", "artifact_MB": "artifact (MB)",
            "eval_wall_s": "eval time (s)"}
    if done.get("eval_added_anon_mb", pd.Series(dtype=float)).notna().any():  # recorded since 2026-12-05
        cols["eval_added_anon_mb"] = "evaluation adds (MiB)"  # a 4-bit model's dequantised weights, say
    table = done.groupby(["model", "method"])[list(cols)].mean().rename(columns=cols)
    if tuning is not None and not tuning.empty:
        sweep = tuning.groupby(["model", "method"])["sweep_wall_s"].mean()
        # a run's wall without its curve evaluation (trials have none): like for like with a trial
        one = done["wall_s"] - done["curve_eval_wall_s"].fillna(0) if "wall_s" in done else np.nan
        table["one run, wall (s)"] = done.assign(one=one).groupby(["model", "method"])["one"].mean()
        table["tuning sweep, wall (s)"] = sweep.reindex(table.index)
        table = table.round({"one run, wall (s)": 0, "tuning sweep, wall (s)": 0})
    return table.round({"train time (s)": 1, "tokens/s": 0, "peak memory in training (MiB)": 0,
                        "evaluation adds (MiB)": 0,
                        "trainable %": 3, "artifact (MB)": 2, "eval time (s)": 1})


def peak_memory(runs: pd.DataFrame) -> pd.Series:
    """Peak memory of each run's training, MiB: anonymous memory (what the process holds,
    without file pages of memory-mapped weights, without in-training curve evaluation);
    runs recorded before that was measured fall back to their peak RSS."""
    if "peak_anon_mb" not in runs:
        return runs["peak_rss_mb"]
    return runs["peak_anon_mb"].fillna(runs["peak_rss_mb"])


def failed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "done"][["run_id", "model", "method", "train_data",
                                           "train_size", "seed", "status", "error"]]


# ----------------------------------------------------------- learning vs forgetting

def measurement_check(runs: pd.DataFrame) -> str:
    """A sentence, from the runs table, on whether every finished run was evaluated in one
    precision and on the same items of each task (what the comparisons assume)."""
    import json

    done = runs[runs["status"] == "done"]
    if done.empty:
        return "No run has finished."
    dtypes = done["eval_dtype"].astype(str).value_counts(sort=False)
    items: dict = {}
    for digest in done["eval_items"].dropna():
        for task, h in json.loads(digest).items():
            items.setdefault(task, set()).add(h)
    text = (f"All {len(done)} finished runs were evaluated in {dtypes.index[0]}" if len(dtypes) == 1 else
            "⚠ The finished runs were evaluated in different precisions: "
            + "; ".join(f"{d}: {n} runs" for d, n in dtypes.items()))
    mixed = sorted(t for t, v in items.items() if len(v) > 1)
    text += (f"; ⚠ runs scored different items on {', '.join(mixed)}." if mixed else
             ", each task on the same items in every run.")
    return text


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
            a = samples.item_logliks(outputs / "runs" / ref_id, task)
            b = samples.item_logliks(outputs / "runs" / run_id, task)
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
                         learned=bool(_separated(learn.iloc[0]) and learn["gain"].iloc[0] > 0),
                         forgot_on=", ".join(r["task"] for _, r in other.iterrows() if _separated(r) and r["gain"] < 0),
                         replayed=", ".join(t for t in other["task"]
                                            if t in str(g["replayed_nll"].iloc[0]).split(","))))
    out = pd.DataFrame(rows)
    if not out.empty:
        out["pareto"] = pareto_front(out)
    return out


def _separated(row) -> bool:
    return verdicts.decide(row)[0] == verdicts.SEPARATED


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


# ----------------------------------------------------------- learning-rate tuning

TUNING_GROUP = tuning.GROUP


def at_configured_rate(trials: pd.DataFrame) -> pd.Series:
    """Which trials ran at their method's configured rate (the untuned baseline)."""
    return pd.Series(np.isclose(trials["learning_rate"], trials["default_rate"], rtol=1e-3), index=trials.index)


def tuning_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (model, method, data, size, seed): the rates tried, the chosen one, its validation
    score, the score at the method's default rate, and whether the choice sits at an edge of
    the range (the best rate may then lie outside it)."""
    rows = []
    for key, g in trials.groupby(TUNING_GROUP, dropna=False):
        g = g.sort_values("learning_rate")
        chosen = g[g["selected"].astype(bool)]
        default = g[at_configured_rate(g)]
        rate = chosen["learning_rate"].iloc[0] if len(chosen) else np.nan
        rates = g["learning_rate"].tolist()
        rows.append(dict(zip(TUNING_GROUP, key), trials=len(g), rates=", ".join(f"{r:.3g}" for r in rates),
                         chosen_rate=rate, default_rate=g["default_rate"].iloc[0],
                         validation_bpb=chosen["validation_bpb"].iloc[0] if len(chosen) else np.nan,
                         validation_bpb_default=default["validation_bpb"].iloc[0] if len(default) else np.nan,
                         failed=int((g["status"] != "done").sum()),
                         edge=("largest" if rate == rates[-1] else "smallest" if rate == rates[0] else "")
                         if len(chosen) and len(rates) > 1 else "",
                         sweep_wall_s=g["wall_s"].sum()))
    return pd.DataFrame(rows)


def tuning_pairs(outputs: str | Path, trials: pd.DataFrame) -> pd.DataFrame:
    """Methods against each other on the validation items, item by item, once at their
    configured rates and once at their chosen rates (same items in every trial): did tuning
    flip an order that the noise cannot explain? Holm within each rate kind."""
    outputs = Path(outputs)
    rows = []
    if trials.empty:
        return pd.DataFrame()
    for key, g in trials.groupby(["model", "train_data", "train_size", "seed"], dropna=False):
        picks = {}
        for method, m in g.groupby("method"):
            default = m[at_configured_rate(m)]
            chosen = m[m["selected"].astype(bool)]
            picks[method] = {"default": default["run_id"].iloc[0] if len(default) else None,
                             "chosen": chosen["run_id"].iloc[0] if len(chosen) else None}
        task = g["validation_task"].iloc[0]
        names = sorted(picks)
        for kind in ("default", "chosen"):
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    ra, rb = picks[a][kind], picks[b][kind]
                    if ra is None or rb is None:
                        continue
                    sa = samples.load_samples(outputs / "runs" / ra, task)
                    sb = samples.load_samples(outputs / "runs" / rb, task)
                    rows.append(dict(zip(["model", "train_data", "train_size", "seed"], key), rates=kind,
                                     method=a, other=b, **stats.paired(sb, sa, "bits_per_byte")))
    df = pd.DataFrame(rows)
    return stats.adjust(df, ["rates"]).rename(columns={"mean_diff": "difference"}) if not df.empty else df


# ----------------------------------------------------------- curves along training

def curve_table(outputs: str | Path, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, curve step, log-likelihood task): mean bits per byte, its change
    since the run's step 0, and the task's role for that run (`target`: the task its
    training data targets; `replayed`: a task whose source its mix replays; else `other`)."""
    from ftstudy.compute import results

    outputs = Path(outputs)
    rows = []
    done = runs[(runs["status"] == "done") & ~runs["method"].isin(REFERENCES)]
    for _, r in done.iterrows():
        folder = outputs / "runs" / r["run_id"]
        points = samples.curve_points(folder)
        if not points:
            continue
        cell = results.read_json(folder / "metrics.json")["cell"]
        for p in points:
            for m in p["metrics"]:
                if m["metric"] != "bits_per_byte":
                    continue
                role = ("target" if m["task"] == cell.get("target_nll") else
                        "replayed" if m["task"] in (cell.get("replayed_nll") or []) else "other")
                rows.append(dict(run_id=r["run_id"], **{k: r[k] for k in TUNING_GROUP},
                                 step=p["step"], task=m["task"], role=role, bpb=m["value"]))
    df = pd.DataFrame(rows, columns=["run_id", *TUNING_GROUP, "step", "task", "role", "bpb"])
    if df.empty:
        return df.assign(change=[])
    start = df[df["step"] == 0].set_index(["run_id", "task"])["bpb"]
    df["change"] = df["bpb"] - [start.get((a, b), np.nan) for a, b in zip(df["run_id"], df["task"])]
    return df


def learning_path(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run and step: learning (bits per byte gained on the target task since step 0)
    and forgetting (bits per byte lost on each `other` task), wide, for the curves figure."""
    learn = curve[curve["role"] == "target"][["run_id", "step", "change"]].rename(columns={"change": "learning"})
    learn["learning"] = -learn["learning"]
    lost = curve[curve["role"] == "other"].rename(columns={"change": "forgetting", "task": "forgetting_task"})
    return lost.merge(learn, on=["run_id", "step"])[
        [*TUNING_GROUP, "run_id", "step", "forgetting_task", "learning", "forgetting"]]


MATCHED_GROUP = ["model", "train_data", "train_size", "seed", "forgetting_task"]


def _crossing(learned: np.ndarray, level: float) -> tuple[int, float]:
    """(k, w): the first curve point k with learning >= level, and the weight w that puts
    `level` between points k-1 and k (learning is linear in between)."""
    k = int(np.argmax(learned >= level))
    if k == 0:
        return 0, 1.0
    return k, float((level - learned[k - 1]) / (learned[k] - learned[k - 1]))


def _at_level(forget: np.ndarray, k: int, w: float) -> np.ndarray:
    """Per-item forgetting interpolated at (k, w); `forget` is steps x items."""
    return forget[k] if k == 0 else forget[k - 1] + w * (forget[k] - forget[k - 1])


def matched_forgetting(outputs: str | Path, curve: pd.DataFrame, resamples: int = stats.N_RESAMPLES,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forgetting at matched learning (Biderman et al., 2024), per (model, data, size, seed,
    retention task): the learning level L* every method's curve reaches (the smallest of
    their highest levels); each method's curve is interpolated linearly to where it first
    reaches L*, item by item, and its forgetting there is the bits per byte lost on the
    retention items since its step 0.

    Returns (per method, between methods). Intervals are percentile bootstraps of the whole
    procedure: target and retention items are resampled, and L*, each crossing and each
    forgetting recomputed, so the uncertainty of the level itself is included. p-values are
    sign-flip tests on the per-item values at the point estimate's crossings (given L*), Holm-
    adjusted within each table and retention task. A matched level far below the others'
    highest learning is flagged: the comparison then covers only the start of training.
    """
    outputs = Path(outputs)
    per_method, between = [], []
    rng = np.random.default_rng(seed)
    for key, g in learning_path(curve).groupby(MATCHED_GROUP, dropna=False):
        ident = dict(zip(MATCHED_GROUP, key))
        learn, forget, run_of = {}, {}, {}
        for method, m in g.groupby("method"):
            run_id = m["run_id"].iloc[0]
            folder = outputs / "runs" / run_id
            steps = sorted(m["step"])
            target = curve[(curve["run_id"] == run_id) & (curve["role"] == "target")]["task"].iloc[0]
            t = pd.concat([samples.curve_item_values(folder, s, target) for s in steps], axis=1).dropna().to_numpy().T
            r = pd.concat([samples.curve_item_values(folder, s, key[-1]) for s in steps], axis=1).dropna().to_numpy().T
            learn[method], forget[method], run_of[method] = t[0] - t, r - r[0], run_id
        methods_ = sorted(learn)
        best = {mm: float(learn[mm].mean(axis=1).max()) for mm in methods_}
        level = min(best.values())
        others = [v for mm, v in best.items() if v != level] or [level]
        flag = (f"matched level set by {min(best, key=best.get)}, which learned {level:.4f} against a median "
                f"{np.median(others):.4f} for the others: only the start of training is compared"
                if level < 0.25 * np.median(others) else "")
        if level <= 0:
            for mm in methods_:
                per_method.append({**ident, "method": mm, "run_id": run_of[mm], "matched_learning": level,
                                   "note": f"not matched: {min(best, key=best.get)} never improved its target"})
            continue
        point = {}
        for mm in methods_:
            k, w = _crossing(learn[mm].mean(axis=1), level)
            point[mm] = _at_level(forget[mm], k, w)
            steps = sorted(g[g["method"] == mm]["step"])
            at = steps[k] if k == 0 else steps[k - 1] + w * (steps[k] - steps[k - 1])
            per_method.append({**ident, "method": mm, "run_id": run_of[mm], "matched_learning": level,
                               "at_step": at, "note": flag, **stats.mean_difference(point[mm], seed)})
        # the whole procedure, resampled: items of the target and of the retention task
        n_t, n_r = learn[methods_[0]].shape[1], forget[methods_[0]].shape[1]
        boot = np.full((resamples, len(methods_)), np.nan)
        for b in range(resamples):
            it, ir = rng.integers(0, n_t, n_t), rng.integers(0, n_r, n_r)
            curves_b = {mm: learn[mm][:, it].mean(axis=1) for mm in methods_}
            level_b = min(c.max() for c in curves_b.values())
            if level_b <= 0:
                continue
            for j, mm in enumerate(methods_):
                k, w = _crossing(curves_b[mm], level_b)
                boot[b, j] = _at_level(forget[mm][:, ir], k, w).mean()
        for j, mm in enumerate(methods_):
            row = next(r for r in per_method if r["method"] == mm and all(r[c] == ident[c] for c in MATCHED_GROUP))
            if not np.isnan(row.get("ci_low", 0.0)):
                row["ci_low"], row["ci_high"] = np.nanpercentile(boot[:, j], [2.5, 97.5])
        for i, a in enumerate(methods_):
            for j in range(i + 1, len(methods_)):
                b_ = methods_[j]
                diff = point[a] - point[b_]
                row = {**ident, "method": a, "other": b_, "matched_learning": level, "note": flag,
                       **stats.mean_difference(diff, seed)}
                if not np.isnan(row["ci_low"]):
                    row["ci_low"], row["ci_high"] = np.nanpercentile(boot[:, i] - boot[:, j], [2.5, 97.5])
                between.append(row)
    out, vs = pd.DataFrame(per_method), pd.DataFrame(between)
    if not out.empty and "p_value" in out:
        out = stats.adjust(out, ["forgetting_task"])
    if not vs.empty:
        vs = stats.adjust(vs, ["forgetting_task"])
    return out.rename(columns={"mean_diff": "forgetting"}), vs.rename(columns={"mean_diff": "difference"})
