"""The Slurm executor: each cell a Slurm job through submitit, running `cell.run_cell`.

The same run folders as locally; Slurm queues and places the jobs. No queue of our own.

The runner waits for the jobs with a progress bar. A job that dies outside the notebook
(time limit, node failure, cancel) gets a `failed` status.json with Slurm's state, so resume,
skip-done and --retry-failed work exactly as with the local executor.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ftstudy.compute import progress, results
from ftstudy.run.cell import describe, run_cell
from ftstudy.run.executors import Unavailable


class SlurmUnavailable(Unavailable):
    """No Slurm client tools here: say so before anything is submitted."""


def check_available() -> None:
    missing = [t for t in ("sbatch", "squeue", "sacct") if shutil.which(t) is None]
    if missing:
        raise SlurmUnavailable(f"executor slurm: {', '.join(missing)} not found on PATH "
                               "(run on a Slurm login node, or use --executor local)")
    try:
        import submitit  # noqa: F401
    except ImportError as e:
        raise SlurmUnavailable("executor slurm needs the submitit package (pip install submitit)") from e


def make_executor(options: dict, log_dir: Path):
    import submitit

    ex = submitit.AutoExecutor(folder=str(log_dir / "%j"), cluster="slurm")
    kw = dict(timeout_min=options["time_min"], cpus_per_task=options["cpus_per_task"],
              mem_gb=options["mem_gb"], slurm_array_parallelism=options["array_parallelism"],
              name="ftstudy")
    if options.get("gpus_per_node"):
        kw["gpus_per_node"] = options["gpus_per_node"]
    if options.get("partition"):
        kw["slurm_partition"] = options["partition"]
    if options.get("additional"):
        kw["slurm_additional_parameters"] = dict(options["additional"])
    ex.update_parameters(**kw)
    return ex


def run_cells(cells: list[dict], outputs: Path, data_dir, options: dict, log=print,
              poll_s: float = 2.0) -> dict:
    """Submit one job per cell (a job array), wait, return {run_id: status}.

    Callers check `check_available()` first (grid.run does, before writing anything)."""
    from tqdm.auto import tqdm

    log_dir = Path(options.get("log_dir") or outputs / "slurm").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    ex = make_executor(options, log_dir)
    with ex.batch():
        jobs = [ex.submit(run_cell, cell, outputs, data_dir) for cell in cells]
    log(f"submitted {len(jobs)} Slurm job(s): {', '.join(j.job_id for j in jobs)} (logs in {log_dir})")
    states: dict[str, str] = {}
    pending = dict(zip(jobs, cells))
    last_line = time.time()
    with tqdm(total=len(jobs), desc="slurm", unit="cell") as bar:
        while pending:
            running = [(c, progress.read(outputs / "runs" / f".tmp-{c['run_id']}")) for c in pending.values()]
            running = [(c, p) for c, p in running if p]  # a job that has started writes progress
            if running:
                bar.set_postfix_str(f"{describe(running[0][0])}: {progress.describe(running[0][1])}")
                if time.time() - last_line >= 10:  # the same, as log lines, for every running job
                    for c, p in running:
                        bar.write(f"  {describe(c)}: {progress.describe(p)}")
                    last_line = time.time()
            for job, cell in list(pending.items()):
                if not job.done():
                    continue
                del pending[job]
                states[cell["run_id"]] = _outcome(job, cell, outputs)
                bar.update(1)
                log(f"{states[cell['run_id']]:6s} {cell['run_id']} {describe(cell)} "
                    f"(job {job.job_id})")
            if pending:
                time.sleep(poll_s)
    return states


def _outcome(job, cell: dict, outputs: Path) -> str:
    """The cell's status; a job that died before writing one gets a failed status.json."""
    try:
        return job.result()
    except Exception as e:  # killed, timed out, cancelled, or an error outside the notebook
        final = outputs / "runs" / cell["run_id"]
        if not (final / "status.json").is_file() or results.read_json(final / "status.json")["status"] != "done":
            reason = str(e).strip().splitlines()[-1][:500] if str(e).strip() else type(e).__name__
            final.mkdir(parents=True, exist_ok=True)
            results.write_json(final / "cell.json", cell)
            results.write_json(final / "status.json", {
                "run_id": cell["run_id"], "method": cell["method"], "model": cell["model_name"],
                "status": "failed", "error": f"Slurm job {job.job_id} ended {job.state}: {reason}",
                "slurm_job_id": job.job_id})
            shutil.rmtree(outputs / "runs" / f".tmp-{cell['run_id']}", ignore_errors=True)
        return "failed"
