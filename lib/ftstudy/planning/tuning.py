"""Learning-rate sweeps with an equal budget: every method gets the same trials (before any
extension past an edge of its range, `beyond`, which the book counts per method).

The learning rate moves results more than the choice of method does (PEFT's method
comparison; "LoRA Without Regret", 2025), so a ranking at one untuned rate per method mostly
ranks those rates. A trial is an ordinary grid cell (resumable, hashed, runnable on Slurm)
that trains as the study's run would and is scored on validation rows of its target set,
never on test items. Per sweep (each condition, or with `per: method` each model and method in
its main condition) the trial with the lowest validation bits per byte picks the rate (ties:
the smaller rate); the study's runs then train at that rate (with the trial's seed, the very
same training, unless `tuning.seed` keeps trials on a seed of their own) and are evaluated on
the test tasks. Every trial's score is kept in `tuning.csv`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ftstudy.compute import data, methods

METRIC = "bits_per_byte"
# Scores this close are a tie (float noise between equally good rates): the smaller rate wins.
TIE = 1e-9


def configured_rates(params) -> dict[str, float]:
    """Per method, the rate it would train at without a sweep (its default, after the params
    file's deltas): the baseline a sweep is compared with."""
    shared = params.training.model_dump(exclude_unset=True)
    return {method: methods.resolve(method, entry.adapter, {**shared, **entry.training},
                                    entry.load)["training"]["learning_rate"]
            for method, entry in params.methods.items()}


def rates(params) -> dict[str, list[float]]:
    """Per method of a study, the learning rates its trials train at: explicit
    `tuning.learning_rates`, else `tuning.factors` times its configured rate."""
    own = configured_rates(params)
    explicit = params.tuning.learning_rates
    return {m: sorted(explicit[m]) if m in explicit else sorted(float(f"{own[m] * f:.4g}") for f in params.tuning.factors)
            for m in params.methods}


def validation_task(mix: dict) -> str:
    """The log-likelihood task on the validation rows of the set a mix targets."""
    return data.TRAIN_SETS[data.target_set(mix)]["validation_nll"]


def trial_cell(cell: dict, rate: float, limit: int | None, seed: int | None = None) -> dict:
    """A study cell as a trial at `rate`: trained the same way (no curve; with `seed`, that
    seed's data order and initialisation instead of the cell's), scored on the validation
    task only."""
    ev = cell["evaluation"]
    task = {"limit": limit} if limit else {}
    evaluation = {**{k: v for k, v in ev.items() if k != "tasks"},
                  "tasks": {validation_task(cell["mix"]): task}}
    training = {**cell["training"], "learning_rate": rate, "eval_every": 0}
    return {**cell, "training": training, "evaluation": evaluation, "trial": True,
            **({"seed": seed} if seed is not None else {})}


def beyond(tried: list[float], chosen: float) -> float | None:
    """The next rate to try when `chosen` sits at an edge of the sorted rates `tried`: one
    step further, the step being the ratio of the two outermost rates on that side; None
    when the choice lies inside the range (bracketed) or only one rate was tried."""
    if len(tried) < 2 or tried[0] < chosen < tried[-1]:
        return None
    step = tried[-1] / tried[-2] if chosen == tried[-1] else tried[0] / tried[1]
    return float(f"{chosen * step:.4g}")


def select(scores: dict[float, float | None]) -> float | None:
    """The chosen rate: the lowest score (trials without one, e.g. a diverged run, lose);
    within `TIE` of the lowest, the smaller rate. None if no trial has a score."""
    scored = {r: s for r, s in scores.items() if s is not None and s == s}
    if not scored:
        return None
    best = min(scored.values())
    return min(r for r, s in scored.items() if s <= best + TIE)


ALL_DIVERGED = "every learning-rate trial diverged"
# A trial that failed this way lost (its rate diverged); any other failure (out of memory, a
# killed job) says nothing about the rate, and its study run waits for a retry.
DIVERGED = "NonFiniteLoss"


def score(record: dict) -> float | None:
    """A finished trial's validation score (bits per byte on its validation task)."""
    task = validation_task(record["cell"]["mix"])
    return next((m["value"] for m in record.get("metrics", [])
                 if m["task"] == task and m["metric"] == METRIC), None)


def trial_state(run_dir: Path) -> tuple[str, float | None]:
    """(state, validation score) of a trial's run folder; state is `pending`, `done`,
    `diverged` (a non-finite loss: the rate loses) or `failed` (anything else)."""
    from ftstudy.compute import results

    status_file = run_dir / "status.json"
    if not status_file.is_file():
        return "pending", None
    status = results.read_json(status_file)
    if status["status"] != "done":
        return ("diverged" if str(status.get("error", "")).startswith(DIVERGED) else "failed"), None
    return "done", score(results.read_json(run_dir / "metrics.json"))


def choose(trials: list[dict], outputs: Path) -> tuple[float | None, str]:
    """(chosen rate, why not) for one group of trials: a rate once every trial has finished
    or diverged and one has a score; else None and what it waits for."""
    found = {t["training"]["learning_rate"]: trial_state(outputs / "runs" / t["run_id"]) for t in trials}
    pending = [r for r, (state, _) in found.items() if state == "pending"]
    failed = [r for r, (state, _) in found.items() if state == "failed"]
    if pending:
        return None, f"waits for {len(pending)} of {len(trials)} learning-rate trials"
    if failed:
        return None, (f"{len(failed)} learning-rate trial(s) failed for a reason other than divergence "
                      "(see their status.json; rerun with --retry-failed)")
    chosen = select({r: s for r, (_, s) in found.items()})
    return chosen, "" if chosen is not None else ALL_DIVERGED


GROUP = ["model", "method", "train_data", "train_size", "seed"]


def table(records: list[dict], configured: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per trial: its group, rate, the method's configured rate (`configured_rates`),
    validation score, status and wall time, and whether the selection rule chose it."""
    rows = []
    for r in records:
        cell = r.get("grid_cell") or {}
        if not cell.get("trial"):
            continue
        rows.append(dict(run_id=cell["run_id"], model=cell["model_name"], method=cell["method"],
                         train_data=cell["train_data"], train_size=cell["train_size"], seed=cell["seed"],
                         learning_rate=cell["training"]["learning_rate"],
                         default_rate=(configured or {}).get(cell["method"]),
                         validation_task=validation_task(cell["mix"]),
                         validation_bpb=score(r) if r["status"] == "done" else None, status=r["status"],
                         wall_s=r.get("wall_s"), train_wall_s=r.get("train_wall_s")))
    columns = ["run_id", *GROUP, "learning_rate", "default_rate", "validation_task",
               "validation_bpb", "status", "wall_s", "train_wall_s", "selected"]
    df = pd.DataFrame(rows, columns=columns[:-1])
    df["selected"] = False
    for _, g in df.groupby(GROUP, dropna=False):
        chosen = select(dict(zip(g["learning_rate"], g["validation_bpb"].where(g["validation_bpb"].notna(), None))))
        df.loc[g.index, "selected"] = g["learning_rate"] == chosen
    return df[columns]
