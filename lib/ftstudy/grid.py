"""The grid: params -> cells -> one papermill-executed notebook per cell, in its own folder.

A cell's folder is `outputs/runs/<id>`, id = short hash of the resolved cell. It is built
under a temporary name and renamed into place only when complete, so a killed grid never
leaves a half-written folder that counts as done. A failed cell is recorded (status,
error, executed notebook) and the grid goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path

from ftstudy import evaluate, fingerprint, methods, paths, results
from ftstudy.params import Params


def run_id(cell: dict) -> str:
    blob = json.dumps(cell, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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


def notebook_for(method: str) -> Path:
    name = "base" if method in methods.REFERENCES else method
    return paths.project_root() / "notebooks" / f"{name}.ipynb"


def status_of(outputs: Path, rid: str) -> str:
    f = outputs / "runs" / rid / "status.json"
    return results.read_json(f)["status"] if f.is_file() else "pending"


def staleness(cell: dict, outputs: Path, data_dir) -> list[str]:
    """For a finished cell: which parts of its recorded fingerprint differ from today's."""
    recorded = outputs / "runs" / cell["run_id"] / "fingerprint.json"
    old = results.read_json(recorded) if recorded.is_file() else None
    return fingerprint.differences(old, fingerprint.of_cell(cell, notebook_for(cell["method"]), data_dir))


def parameters_for(cell: dict, run_dir: Path, data_dir) -> dict:
    """What papermill injects. Plain values only: never secrets (they would be written
    into the executed notebook)."""
    p = dict(run_dir=str(run_dir), run_id=cell["run_id"], model=cell["model"],
             evaluation=cell["evaluation"], data_dir=str(data_dir) if data_dir else None)
    p["load"] = cell.get("load", {})
    if cell.get("control"):
        p.update(train_data=None, train_data_name=None, train_size=0, seed=cell["seed"],
                 training=cell["training"], adapter=cell["adapter"])
    elif cell["method"] in methods.REFERENCES:
        p["reference"] = cell["method"]
    else:
        p.update(train_data=cell["mix"], train_data_name=cell["train_data"],
                 train_size=cell["train_size"], seed=cell["seed"], training=cell["training"],
                 adapter=cell["adapter"], load=cell["load"])
        if cell.get("distributed"):
            p["distributed"] = cell["distributed"]
    return p


def run_cell(cell: dict, outputs: Path, data_dir) -> str:
    """Execute one cell's notebook; returns its final status (`done` or `failed`)."""
    import papermill

    runs = outputs / "runs"
    final = runs / cell["run_id"]
    tmp = runs / f".tmp-{cell['run_id']}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    results.write_json(tmp / "cell.json", cell)
    nb = notebook_for(cell["method"])
    results.write_json(tmp / "fingerprint.json", fingerprint.of_cell(cell, nb, data_dir))
    start = time.time()
    status = {"run_id": cell["run_id"], "method": cell["method"], "model": cell["model_name"],
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "notebook": nb.name}
    if os.environ.get("SLURM_JOB_ID"):  # as sacct and submitit name it (array_task for arrays)
        array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        status["slurm_job_id"] = "_".join(array) if all(array) else os.environ["SLURM_JOB_ID"]
    try:
        papermill.execute_notebook(
            str(nb), str(tmp / nb.name), parameters=parameters_for(cell, tmp, data_dir),
            cwd=str(paths.project_root()), progress_bar=False, log_output=False,
            # Every output is on disk when the last cell ends; a graceful kernel shutdown
            # then waits ~3 s for the interpreter to tear down torch & co. (bench/notebook_overhead.py).
            shutdown_kernel="immediate")
        if not (tmp / "metrics.json").is_file():
            raise RuntimeError(f"{nb.name} finished without writing metrics.json")
        status["status"] = "done"
    except Exception as e:  # the grid goes on; the executed notebook keeps the traceback
        status.update(status="failed", error=_short_error(e), traceback=traceback.format_exc())
    status["wall_s"] = time.time() - start
    results.write_json(tmp / "status.json", status)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return status["status"]


def _short_error(e: Exception) -> str:
    name = getattr(e, "ename", type(e).__name__)
    value = getattr(e, "evalue", str(e))
    return f"{name}: {value}".strip()[:2000]


def run(params: Params, retry_failed: bool = False, dry_run: bool = False, log=print,
        executor: str | None = None, slurm_options: dict | None = None,
        rerun_stale: bool = False) -> dict:
    """Run every pending cell; returns {run_id: status}. Done cells are skipped, unless
    stale (fingerprint changed since they ran) and `rerun_stale` is set.

    `executor` (default: the params file's `executor.kind`) is `local` (cells one after
    another in this process's machine) or `slurm` (a job per cell, see ftstudy.slurm);
    `slurm_options` override the params file's `executor.slurm` values.
    """
    from tqdm.auto import tqdm

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
        return states
    if why_stale and not rerun_stale:
        log(f"{len(why_stale)} finished cell(s) are stale (inputs changed since they ran); "
            "kept as they are: rerun them with --rerun-stale")
    if kind == "slurm":
        from ftstudy import slurm
        slurm.check_available()  # before anything is written or submitted
    (outputs / "runs").mkdir(parents=True, exist_ok=True)
    for stale in (outputs / "runs").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    log(f"{len(cells)} cells, {len(cells) - len(todo)} already recorded, {len(todo)} to run")
    if kind == "slurm" and todo:
        options = {**params.executor.slurm.model_dump(), **(slurm_options or {})}
        states.update(slurm.run_cells(todo, outputs, data_dir, options, log=log))
    else:
        bar = tqdm(todo, desc="grid", unit="cell")
        for i, cell in enumerate(bar, 1):
            bar.set_postfix_str(describe(cell))
            t = time.time()
            states[cell["run_id"]] = run_cell(cell, outputs, data_dir)
            log(f"[{i}/{len(todo)}] {states[cell['run_id']]:6s} {cell['run_id']} {describe(cell)} "
                f"({time.time() - t:.0f} s)")
    results.collect(outputs, cells)
    return states


def describe(cell: dict) -> str:
    if cell["method"] in methods.REFERENCES:
        return f"{cell['model_name']} {cell['method']}"
    if cell.get("control"):
        return f"{cell['model_name']} {cell['method']} control (0 steps)"
    return (f"{cell['model_name']} {cell['method']} {cell['train_data']} n={cell['train_size']} "
            f"seed={cell['seed']}")
