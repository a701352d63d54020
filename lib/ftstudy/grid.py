"""The grid: a params file expanded into cells, and the pending ones handed to an executor.

A cell's folder is `outputs/runs/<id>`, id = short hash of the resolved cell (see
`ftstudy.cell`, which runs one). A failed cell is recorded and the grid goes on.
"""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from ftstudy import evaluate, executors, methods, paths, results
from ftstudy.cell import describe, run_id, staleness, status_of
from ftstudy.params import Params


def _model_cell(name: str, entry) -> dict:
    return {"name": name, "source": entry.source(), "dtype": entry.dtype}


def expand(params: Params) -> list[dict]:
    """Every cell of the grid, base-model evaluations first, each with its `run_id`."""
    evaluation = evaluate.resolve(params.evaluation.model_dump(exclude_none=True))
    # lm-eval settings of each task as resolved; limits None mean "all items".
    evaluation["tasks"] = {t: {k: v for k, v in (s or {}).items() if v is not None}
                           for t, s in evaluation["tasks"].items()}
    # Precedence: train.DEFAULTS < method defaults < params `training` < the method's own delta.
    shared_training = params.training.model_dump(exclude_unset=True)
    cells = []
    for mname, mentry in params.models.items():
        model = _model_cell(mname, mentry)
        cells.append(dict(method="base", model=model, evaluation=evaluation, load={},
                          train_data=None, train_size=0, seed=None))
        if any(methods.resolve(m, load=c.load)["load"].get("quantize_4bit")
               for m, c in params.methods.items()):
            cells.append(dict(method="base_4bit", model=model, evaluation=evaluation,
                              load=methods.resolve("base_4bit")["load"], train_data=None,
                              train_size=0, seed=None))
        for method, mcfg in params.methods.items():
            spec = methods.resolve(method, mcfg.adapter, {**shared_training, **mcfg.training},
                                   mcfg.load)
            if params.controls:  # the method applied, trained 0 steps, no data
                cells.append(dict(method=method, control=True, model=model, evaluation=evaluation,
                                  adapter=spec["adapter"], load=spec["load"],
                                  training={**spec["training"], "max_steps": 0}, train_data=None,
                                  mix=None, train_size=0, seed=params.seeds[0]))
            for label, mix in params.train_data.items():
                for size in params.train_sizes:
                    for seed in params.seeds:
                        cell = dict(method=method, model=model, evaluation=evaluation,
                                    adapter=spec["adapter"], load=spec["load"],
                                    training=spec["training"], train_data=label, mix=mix,
                                    train_size=size, seed=seed)
                        if params.distributed.processes > 1:  # single-process ids unchanged
                            cell["distributed"] = params.distributed.model_dump()
                        cells.append(cell)
    for c in cells:
        c["model_name"] = c["model"]["name"]
        c["run_id"] = run_id({k: v for k, v in c.items() if k != "run_id"})
    ids = [c["run_id"] for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate cells in the grid")
    return cells


def shape(cell: dict) -> str:
    """What a cell's wall time depends on: model, method (or reference / control), training
    steps, batch and length, training size, evaluation settings; not the data label or seed."""
    kind = "control" if cell.get("control") else cell["method"]
    training = {k: (cell.get("training") or {}).get(k) for k in ("max_steps", "batch_size", "max_length")}
    return json.dumps([cell["model"], kind, training, cell.get("train_size"), cell["evaluation"]],
                      sort_keys=True, default=str)


def estimate_seconds(cells: list[dict], outputs: Path) -> tuple[float, int]:
    """(seconds, cells estimated): the pending `cells`' wall time on this machine, each the
    median wall of finished cells of the same shape (any grid in `outputs`) run on a CPU of
    the same kind. Cells with no finished twin are not counted."""
    from ftstudy import precision

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
    known = [statistics.median(walls[shape(c)]) for c in cells if shape(c) in walls]
    return sum(known), len(known)


def run(params: Params, retry_failed: bool = False, dry_run: bool = False, log=print,
        executor: str | None = None, slurm_options: dict | None = None,
        rerun_stale: bool = False) -> dict:
    """Run every pending cell; returns {run_id: status}. Done cells are skipped, unless
    stale (fingerprint changed since they ran) and `rerun_stale` is set.

    `executor` (default: the params file's `executor.kind`) names an executor of
    `ftstudy.executors.REGISTRY`: `local` (cells one after another here) or `slurm` (a job
    per cell); `slurm_options` override the params file's `executor.slurm` values.
    """
    outputs = Path(params.output_dir).resolve()
    data_dir = paths.data_dir(params.data_dir)
    cells = expand(params)
    states = {c["run_id"]: status_of(outputs, c["run_id"]) for c in cells}
    why_stale = {}
    for c in cells:
        if states[c["run_id"]] == "done" and (diff := staleness(c, outputs, data_dir)):
            states[c["run_id"]], why_stale[c["run_id"]] = "stale", diff
    todo = [c for c in cells if states[c["run_id"]] == "pending"
            or (retry_failed and states[c["run_id"]] == "failed")
            or (rerun_stale and states[c["run_id"]] == "stale")]
    kind = executor or params.executor.kind
    if dry_run:
        for c in cells:
            why = f"  [changed: {'; '.join(why_stale[c['run_id']])}]" if c["run_id"] in why_stale else ""
            log(f"{c['run_id']}  {states[c['run_id']]:8s}  {describe(c)}{why}")
        log(f"{len(cells)} cells: {sum(s == 'done' for s in states.values())} done, "
            f"{len(why_stale)} stale, {sum(s == 'failed' for s in states.values())} failed, "
            f"{len(todo)} to run ({kind} executor)")
        if todo:
            seconds, known = estimate_seconds(todo, outputs)
            log(f"estimated {seconds / 60:.1f} min for {known} of the {len(todo)} cells to run, from "
                "finished cells of the same shape on this kind of CPU" + (
                    f"; {len(todo) - known} have no finished twin yet, so no estimate" if known < len(todo) else ""))
        return states
    if why_stale and not rerun_stale:
        log(f"{len(why_stale)} finished cell(s) are stale (inputs changed since they ran); "
            "kept as they are: rerun them with --rerun-stale")
    runner = executors.get(kind)
    runner.check_available()  # before anything is written or submitted
    (outputs / "runs").mkdir(parents=True, exist_ok=True)
    for stale in (outputs / "runs").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    log(f"{len(cells)} cells, {len(cells) - len(todo)} already recorded, {len(todo)} to run")
    if todo:
        options = executors.options(params.executor, kind, slurm_options)
        states.update(runner.run_cells(todo, outputs, data_dir, options, log=log))
    results.collect(outputs, cells)
    return states
