"""Runs one cell: its notebook through papermill into a folder renamed into place when done.

status.json records the outcome, and a killed run never leaves a half-written folder that
counts as done. Every executor calls `run_cell`; `run_id` names a cell by its content.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path

from ftstudy.record import fingerprint
from ftstudy.compute import methods, paths, provenance, recipe, results


def run_id(cell: dict) -> str:
    blob = json.dumps(cell, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def status_of(outputs: Path, rid: str) -> str:
    f = outputs / "runs" / rid / "status.json"
    return results.read_json(f)["status"] if f.is_file() else "pending"


def staleness(cell: dict, outputs: Path, data_dir) -> list[str]:
    """For a finished cell: which parts of its recorded fingerprint differ from today's."""
    recorded = outputs / "runs" / cell["run_id"] / "fingerprint.json"
    old = results.read_json(recorded) if recorded.is_file() else None
    return fingerprint.differences(old, fingerprint.of_cell(cell, recipe.notebook_for(cell["method"]), data_dir))


def run_cell(cell: dict, outputs: Path, data_dir) -> str:
    """Execute one cell's notebook; returns its final status (`done` or `failed`)."""
    import papermill

    runs = outputs / "runs"
    final = runs / cell["run_id"]
    tmp = runs / f".tmp-{cell['run_id']}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    results.write_json(tmp / "cell.json", cell)
    nb = recipe.notebook_for(cell["method"])
    results.write_json(tmp / "fingerprint.json", fingerprint.of_cell(cell, nb, data_dir))
    start = time.time()
    status = {"run_id": cell["run_id"], "method": cell["method"], "model": cell["model_name"],
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "notebook": nb.name}
    if os.environ.get("SLURM_JOB_ID"):  # as sacct and submitit name it (array_task for arrays)
        array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        status["slurm_job_id"] = "_".join(array) if all(array) else os.environ["SLURM_JOB_ID"]
    try:
        papermill.execute_notebook(
            str(nb), str(tmp / nb.name), parameters=recipe.parameters_for(cell, tmp, data_dir),
            cwd=str(paths.project_root()), progress_bar=False, log_output=False,
            # Every output is on disk when the last cell ends; a graceful kernel shutdown
            # then waits ~3 s for the interpreter to tear down torch & co. (bench/notebook_overhead.py).
            shutdown_kernel="immediate",
            # No per-cell kernel log noise (e.g. "running over TCP without encryption").
            extra_arguments=["--IPKernelApp.log_level=ERROR"])
        if not (tmp / "metrics.json").is_file():
            raise RuntimeError(f"{nb.name} finished without writing metrics.json")
        record_lock(tmp / "env.json")
        status["status"] = "done"
    except Exception as e:  # the grid goes on; the executed notebook keeps the traceback
        status.update(status="failed", error=_short_error(e), traceback=traceback.format_exc())
    status["wall_s"] = time.time() - start
    results.write_json(tmp / "status.json", status)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return status["status"]


def record_lock(env_file: Path) -> None:
    """Add to a run's env.json the sha256 of the lock file its environment was installed from
    (`requirements.lock`; see `make setup`), so a run names the exact package set."""
    lock = paths.project_root() / "requirements.lock"
    if env_file.is_file() and lock.is_file():
        env = results.read_json(env_file)
        env["lock"] = {"file": lock.name, "sha256": provenance.file_sha256(lock)}
        results.write_json(env_file, env)


def _short_error(e: Exception) -> str:
    name = getattr(e, "ename", type(e).__name__)
    value = getattr(e, "evalue", str(e))
    return f"{name}: {value}".strip()[:2000]


def describe(cell: dict) -> str:
    if cell["method"] in methods.REFERENCES:
        return f"{cell['model_name']} {cell['method']}"
    if cell.get("control"):
        return f"{cell['model_name']} {cell['method']} control (0 steps)"
    text = (f"{cell['model_name']} {cell['method']} {cell['train_data']} n={cell['train_size']} "
            f"seed={cell['seed']}")
    rate = (cell.get("training") or {}).get("learning_rate")
    if cell.get("trial"):
        return f"{text} trial lr={rate:g}"
    if cell.get("tuned_over"):
        return f"{text} lr={rate:g} (tuned)" if rate else f"{text} (tuned lr)"
    return text
