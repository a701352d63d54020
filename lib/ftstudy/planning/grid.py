"""The grid: a params file expanded into cells, and the pending ones handed to an executor.

A cell's folder is `outputs/runs/<id>`, id = short hash of the resolved cell (see
`ftstudy.run.cell`, which runs one). A failed cell is recorded and the grid goes on.
"""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from ftstudy.run import executors
from ftstudy.compute import defaults, methods, paths, results, train
from ftstudy.planning import tuning
from ftstudy.run.cell import describe, run_id, staleness, status_of
from ftstudy.config.params import Params


def _model_cell(name: str, entry) -> dict:
    return {"name": name, "source": entry.source(), "dtype": entry.dtype}


def _named(cell: dict) -> dict:
    """Name a cell by its content; tracking is not content (it records, never changes a run)."""
    cell["model_name"] = cell["model"]["name"]
    cell["run_id"] = run_id({k: v for k, v in cell.items() if k not in ("run_id", "tracking")})
    return cell


def expand(params: Params, outputs: str | Path | None = None) -> list[dict]:
    """Every runnable cell of the grid, base-model evaluations first, each with its `run_id`
    (with a `tuning` section: the trials, and each study run whose trials have all finished;
    see `plan` for the ones still waiting)."""
    return plan(params, outputs)[0]


def plan(params: Params, outputs: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """(cells, waiting): the runnable cells, and study runs that wait for their learning-rate
    trials (no run id yet: their rate is not chosen). Trial results are read from `outputs`
    (default: the params file's `output_dir`)."""
    outputs = Path(outputs or params.output_dir).resolve()
    rates = tuning.rates(params) if params.tuning else None
    evaluation = params.resolved_evaluation()
    # Precedence: compute/defaults.py < method defaults < params `training` < the design's
    # `training` < the method's own delta.
    shared_training = params.training.model_dump(exclude_unset=True)
    conditions = params.conditions()
    cells, waiting = [], []
    swept: dict[tuple, tuple] = {}  # tuning per method: (model, method) -> (chosen, why, rates)
    for mname, mentry in params.models.items():
        mine = [c for c in conditions if c["model"] == mname]
        if not mine:
            continue
        model = _model_cell(mname, mentry)
        cells.append(dict(method="base", model=model, evaluation=evaluation, load={},
                          train_data=None, train_size=0, seed=None))
        used = list(dict.fromkeys(c["method"] for c in mine))
        if any(methods.resolve(m, load=params.methods[m].load)["load"].get("quantize_4bit") for m in used):
            cells.append(dict(method="base_4bit", model=model, evaluation=evaluation,
                              load=methods.resolve("base_4bit")["load"], train_data=None,
                              train_size=0, seed=None))
        controlled = set()
        for cond in mine:
            method = cond["method"]
            mcfg = params.methods[method]
            if params.controls and method not in controlled:  # the method applied, trained 0 steps, no data
                controlled.add(method)
                spec = methods.resolve(method, mcfg.adapter, {**shared_training, **mcfg.training}, mcfg.load)
                for option in defaults.OPTIONAL_TRAINING:  # a control trains no step: its id ignores them
                    spec["training"].pop(option, None)
                cells.append(dict(method=method, control=True, model=model, evaluation=evaluation,
                                  adapter=spec["adapter"], load=spec["load"],
                                  training={**spec["training"], "max_steps": 0}, train_data=None,
                                  mix=None, train_size=0, seed=params.seeds[0]))
            cell = _study_cell(params, cond, model, evaluation, shared_training)
            if rates is None:
                cells.append(cell)
                continue
            key = _sweep_key(params, cond)
            if key not in swept:
                where = _sweep_condition(params, mine, cond) if params.tuning.per == "method" else cond
                trials, swept[key] = _sweep(_study_cell(params, where, model, evaluation, shared_training),
                                            rates[method], params.tuning, outputs)
                cells += trials
            chosen, why, tried = swept[key]
            cell["training"] = {**cell["training"], "learning_rate": chosen}
            cell["tuned_over"] = tried
            if chosen is None:
                waiting.append({**cell, "model_name": model["name"], "waiting": why})
            else:
                cells.append(cell)
    for c in cells:
        _named(c)
        if params.tracking.report_to:
            c["tracking"] = {**params.tracking.model_dump(), "run_name": f"{params.study}: {describe(c)}"}
    ids = [c["run_id"] for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate cells in the grid")
    return cells, waiting


def _study_cell(params: Params, cond: dict, model: dict, evaluation: dict, shared_training: dict) -> dict:
    """The cell of one design point, its rate not yet chosen where the study sweeps."""
    mcfg = params.methods[cond["method"]]
    spec = methods.resolve(cond["method"], mcfg.adapter, {**shared_training, **cond["training"], **mcfg.training},
                           mcfg.load)
    cell = dict(method=cond["method"], model=model, evaluation=evaluation, adapter=spec["adapter"],
                load=spec["load"], training=spec["training"], train_data=cond["train_data"],
                mix=params.train_data[cond["train_data"]], train_size=cond["train_size"], seed=cond["seed"])
    if params.distributed.processes > 1:  # single-process ids unchanged
        cell["distributed"] = params.distributed.model_dump()
    return cell


def _sweep_key(params: Params, cond: dict) -> tuple:
    """Which sweep sets a design point's rate: one per model and method (`tuning.per: method`),
    else one per condition, its seed left out when every trial trains with `tuning.seed`."""
    if params.tuning.per == "method":
        return cond["model"], cond["method"]
    keep = [k for k in ("model", "method", "train_data", "train_size", "seed")
            if k != "seed" or params.tuning.seed is None]
    return (*(cond[k] for k in keep), json.dumps(cond["training"], sort_keys=True))


def _sweep_condition(params: Params, conditions: list[dict], cond: dict) -> dict:
    """Where a method's one sweep trains (`tuning.per: method`): its first condition on the
    study's first training data and size with no design-level training change (the main
    condition), else its first condition."""
    own = [c for c in conditions if (c["model"], c["method"]) == (cond["model"], cond["method"])]
    main = [c for c in own if c["train_data"] == next(iter(params.train_data))
            and c["train_size"] == params.train_sizes[0] and not c["training"]]
    return (main or own)[0]


def _sweep(cell: dict, rates: list[float], settings, outputs: Path) -> tuple[list[dict], tuple]:
    """A sweep's trials for `cell` and (chosen rate, why not, rates tried): the rates given,
    then, while the best finished one sits at an edge, one more beyond it (`tuning.beyond`),
    or below the smallest when every trial diverged, at most `settings.extend` times; each
    extension runs in the grid's next round."""
    tried = sorted(rates)
    while True:
        trials = [_named(tuning.trial_cell(cell, r, settings.validation_limit, settings.seed)) for r in tried]
        chosen, why = tuning.choose(trials, outputs)
        edge = chosen if chosen is not None else tried[0] if why == tuning.ALL_DIVERGED else None
        further = tuning.beyond(tried, edge) if edge is not None else None
        if further is None or len(tried) - len(rates) >= settings.extend:
            return trials, (chosen, why, tried)
        tried = sorted(tried + [further])


def shape(cell: dict) -> str:
    """What a cell's wall time depends on: model, method (or reference / control), training
    steps, batch and length, the fast-path options that are on, training size, evaluation
    settings; not the data label or seed."""
    kind = "control" if cell.get("control") else cell["method"]
    cfg = cell.get("training") or {}
    training = {k: cfg.get(k) for k in ("batch_size", "max_length", "eval_every")}
    training.update({k: True for k in defaults.OPTIONAL_TRAINING if cfg.get(k)})
    training["steps"] = train.steps_for(cfg, cell.get("train_size") or 0) if cfg else 0
    return json.dumps([cell["model"], kind, training, cell.get("train_size"), cell["evaluation"]],
                      sort_keys=True, default=str)


def estimate_seconds(cells: list[dict], outputs: Path, params: Params | None = None) -> dict:
    """Estimated wall seconds of each of `cells` on this machine: the median wall of finished
    cells of the same shape (any grid in `outputs`) run on a CPU of the same kind, else this
    machine's cached calibration of the cell's model (`ftstudy.planning.calibrate`, with `params`).
    Returns {"seconds": {run id or index: s}, "from_twins": n, "from_calibration": n, "unknown": n}."""
    from ftstudy.planning import calibrate
    from ftstudy.compute import precision

    here = precision.cpu_capability()
    walls: dict[str, list[float]] = {}
    for folder in (outputs / "runs").glob("*"):
        status, cell_file, env = (folder / "status.json", folder / "cell.json", folder / "env.json")
        if not (status.is_file() and cell_file.is_file() and env.is_file()):
            continue
        st = results.read_json(status)
        cpu = (results.read_json(env).get("hardware") or {}).get("cpu") or {}
        if st.get("status") == "done" and cpu.get("torch_cpu_capability") == here["torch_cpu_capability"] \
                and cpu.get("native_bf16") == here["native_bf16"]:
            walls.setdefault(shape(results.read_json(cell_file)), []).append(st["wall_s"])
    cals = {m: calibrate.load(params, m) for m in params.models} if params is not None else {}
    out = {"seconds": {}, "from_twins": 0, "from_calibration": 0, "unknown": 0}
    for i, c in enumerate(cells):
        key = c.get("run_id") or i
        if shape(c) in walls:
            out["seconds"][key] = statistics.median(walls[shape(c)])
            out["from_twins"] += 1
        elif cals.get(c["model_name"]):
            out["seconds"][key] = calibrate.estimate(c, cals[c["model_name"]])
            out["from_calibration"] += 1
        else:
            out["unknown"] += 1
    return out


def _estimate_line(est: dict, n: int) -> str:
    minutes = sum(est["seconds"].values()) / 60
    parts = []
    if est["from_twins"]:
        parts.append(f"{est['from_twins']} from finished cells of the same shape on this kind of CPU")
    if est["from_calibration"]:
        parts.append(f"{est['from_calibration']} from this machine's calibration")
    line = f"estimated {minutes:.1f} min for {n - est['unknown']} of the {n} cells to run ({'; '.join(parts) or 'none'})"
    if est["unknown"]:
        line += (f"; {est['unknown']} have no estimate yet: `ftstudy run <params> --dry-run --calibrate` "
                 "measures this machine (a few minutes, cached)")
    return line


def run(params: Params, retry_failed: bool = False, dry_run: bool = False, log=print,
        executor: str | None = None, slurm_options: dict | None = None,
        rerun_stale: bool = False) -> dict:
    """Run every pending cell; returns {run_id: status}. Done cells are skipped, unless
    stale (fingerprint changed since they ran) and `rerun_stale` is set.

    `executor` (default: the params file's `executor.kind`) names an executor of
    `ftstudy.run.executors.REGISTRY`: `local` (cells one after another here) or `slurm` (a job
    per cell); `slurm_options` override the params file's `executor.slurm` values.
    """
    outputs = Path(params.output_dir).resolve()
    data_dir = paths.data_dir(params.data_dir)
    kind = executor or params.executor.kind
    cells, waiting = plan(params, outputs)
    states, why_stale = _states(cells, outputs, data_dir)
    todo = _todo(cells, states, retry_failed, rerun_stale)
    if dry_run:
        for c in cells:
            why = f"  [changed: {'; '.join(why_stale[c['run_id']])}]" if c["run_id"] in why_stale else ""
            log(f"{c['run_id']}  {states[c['run_id']]:8s}  {describe(c)}{why}")
        for c in waiting:
            log(f"{'-' * 12}  waiting   {describe(c)}  [{c['waiting']}]")
        log(f"{len(cells) + len(waiting)} cells: {sum(s == 'done' for s in states.values())} done, "
            f"{len(why_stale)} stale, {sum(s == 'failed' for s in states.values())} failed, "
            f"{len(todo) + len(waiting)} to run ({kind} executor)"
            + (f", {len(waiting)} of them once their learning-rate trials have finished" if waiting else ""))
        if todo or waiting:
            log(_estimate_line(estimate_seconds(todo + waiting, outputs, params), len(todo) + len(waiting)))
        return states
    if why_stale and not rerun_stale:
        log(f"{len(why_stale)} finished cell(s) are stale (inputs changed since they ran); "
            "kept as they are: rerun them with --rerun-stale")
    runner = executors.get(kind)
    runner.check_available()  # before anything is written or submitted
    (outputs / "runs").mkdir(parents=True, exist_ok=True)
    for stale in (outputs / "runs").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    options = executors.options(params.executor, kind, slurm_options)
    log(f"{len(cells) + len(waiting)} cells, {len(cells) - len(todo)} already recorded, "
        f"{len(todo) + len(waiting)} to run" + (f" ({len(waiting)} after their learning-rate trials)"
                                                if waiting else ""))
    attempted: set[str] = set()
    while todo:  # a second round runs the study cells whose trials the first one finished
        attempted |= {c["run_id"] for c in todo}
        est = estimate_seconds(todo, outputs, params)
        if not est["unknown"]:  # the progress bar's ETA follows the estimate
            options = {**options, "estimates": est["seconds"]}
        states.update(runner.run_cells(todo, outputs, data_dir, options, log=log))
        cells, waiting = plan(params, outputs)
        new_states, _ = _states(cells, outputs, data_dir)
        states.update({k: v for k, v in new_states.items() if k not in states})
        todo = [c for c in _todo(cells, states, retry_failed, rerun_stale) if c["run_id"] not in attempted]
    for c in waiting:
        log(f"not run: {describe(c)}: {c['waiting']}")
    return states


def _states(cells: list[dict], outputs: Path, data_dir) -> tuple[dict, dict]:
    """({run_id: pending/done/failed/stale}, {run_id: what changed} for stale ones)."""
    states = {c["run_id"]: status_of(outputs, c["run_id"]) for c in cells}
    why_stale = {}
    for c in cells:
        if states[c["run_id"]] == "done" and (diff := staleness(c, outputs, data_dir)):
            states[c["run_id"]], why_stale[c["run_id"]] = "stale", diff
    return states, why_stale


def _todo(cells: list[dict], states: dict, retry_failed: bool, rerun_stale: bool) -> list[dict]:
    return [c for c in cells if states[c["run_id"]] == "pending"
            or (retry_failed and states[c["run_id"]] == "failed")
            or (rerun_stale and states[c["run_id"]] == "stale")]
